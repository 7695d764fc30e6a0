// The node's hold on the host's CPU wake-up latency (node/cpu_latency.h):
// the request is in force while the object lives and withdrawn after;
// a request that cannot be made fails naming the device.
#include "node/cpu_latency.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include <gtest/gtest.h>

#include "error.h"

namespace aggvm::dsm {
namespace {

bool device_writable() { return ::access(CpuLatencyRequest::kDevice, W_OK) == 0; }

TEST(CpuLatency, HeldWhileAliveAndWithdrawnAfter) {
  if (!device_writable())
    GTEST_SKIP() << "skip: " << CpuLatencyRequest::kDevice << " is not writable here (needs root and PM QoS)";
  const int32_t before = CpuLatencyRequest::current();
  {
    CpuLatencyRequest held(0);
    EXPECT_EQ(CpuLatencyRequest::current(), 0);
    {
      CpuLatencyRequest looser(50);  // the host keeps the smallest bound
      EXPECT_EQ(CpuLatencyRequest::current(), 0);
    }
    EXPECT_EQ(CpuLatencyRequest::current(), 0);
  }
  EXPECT_EQ(CpuLatencyRequest::current(), before);
}

TEST(CpuLatency, MissingDeviceIsAnErrorNamingIt) {
  try {
    CpuLatencyRequest held(0, "/nonexistent/cpu_dma_latency");
    FAIL() << "a request through a missing device was accepted";
  } catch (const DsmError& e) {
    EXPECT_EQ(e.err(), ENOENT);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/cpu_dma_latency"), std::string::npos) << e.what();
  }
}

TEST(CpuLatency, BoundBeyondTheDevicesRangeIsRefused) {
  try {
    CpuLatencyRequest held(0x80000000u, "/nonexistent/cpu_dma_latency");
    FAIL() << "an out-of-range bound was accepted";
  } catch (const DsmError& e) {
    EXPECT_EQ(e.err(), EINVAL);
    EXPECT_NE(std::string(e.what()).find("out of range"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace aggvm::dsm
