// A PM QoS request for the host's CPU wake-up latency, held while it lives.
//
// A remote fault wakes a sleeping thread at every hop (docs/performance.md,
// "A remote fault, hop by hop").  When that thread is woken on an idle CPU
// which has halted, the wake-up waits for the CPU to come out of its idle
// state: on a virtualised host, for the hypervisor to run the halted vCPU
// again, tens of microseconds each time.  Writing a latency bound to
// /dev/cpu_dma_latency keeps cpuidle from idle states slower than it
// (0: idle CPUs poll), for every CPU of the host, until the file is closed:
// the kernel withdraws the request itself when the process ends, however
// it ends.  The cost is the polling: an idle CPU stays busy.
#pragma once

#include <cstdint>
#include <string>

namespace aggvm::dsm {

class CpuLatencyRequest final {
 public:
  static constexpr const char* kDevice = "/dev/cpu_dma_latency";

  // Asks for at most max_us microseconds; throws DsmError naming the device
  // when the request cannot be made (no such device, not permitted).
  explicit CpuLatencyRequest(uint32_t max_us, const std::string& device = kDevice);
  ~CpuLatencyRequest();
  CpuLatencyRequest(const CpuLatencyRequest&) = delete;
  CpuLatencyRequest& operator=(const CpuLatencyRequest&) = delete;

  // Throws DsmError (EINVAL) for a bound the device cannot take (a binary
  // s32): the constructor's check, for callers that validate ahead of it.
  static void check_bound(uint32_t max_us);

  // The bound in force now on the host: the smallest of every request.
  static int32_t current(const std::string& device = kDevice);

 private:
  int fd_ = -1;
};

}  // namespace aggvm::dsm
