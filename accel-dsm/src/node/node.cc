#include "node/node.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cstring>

#include "log.h"

#include "control.pb.h"

namespace aggvm::dsm {

namespace {

alignas(kPageSize) constexpr std::array<std::byte, kPageSize> kZeroPage{};
constexpr auto kTimeoutScan = std::chrono::milliseconds(20);
constexpr uint64_t kFaultSlackPages = 64;  // room under the cap for faults in flight

}  // namespace

uint64_t Node::now_ns() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

Node::Node(NodeConfig config) : cfg_(std::move(config)) {
  if (cfg_.n_nodes < 1 || cfg_.n_nodes > kMaxNodes)
    fail(EINVAL, "cluster of {} nodes: 1 to {} are supported", cfg_.n_nodes, kMaxNodes);
  if (cfg_.self >= cfg_.n_nodes)
    fail(EINVAL, "node id {} is not in the cluster of {} nodes", cfg_.self, cfg_.n_nodes);
  if (cfg_.addresses.size() != cfg_.n_nodes)
    fail(EINVAL, "{} addresses given for {} nodes", cfg_.addresses.size(), cfg_.n_nodes);
  if (cfg_.timeout.count() <= 0) cfg_.timeout = std::chrono::milliseconds(5000);
  key_ = std::make_unique<ClusterKey>(cfg_.secret, cfg_.cluster_name);
  HomeMap(cfg_.homes, cfg_.n_nodes);  // validates the ranges
  if (cfg_.late.test(0)) fail(EINVAL, "node 0 cannot join later: it starts the cluster");
  if ((cfg_.late >> cfg_.n_nodes).any()) fail(EINVAL, "a late node is outside the cluster of {} nodes", cfg_.n_nodes);
  for (const HomeRange& r : cfg_.homes)
    if (cfg_.late.test(r.node))
      fail(EINVAL, "node {} joins later, so it cannot be home of [{:#x}, {:#x}) at start", r.node, r.gpa_start,
           r.gpa_end);
}

Node::~Node() {
  try {
    abandon();
  } catch (const std::exception& e) {
    log().error("aggvm-dsm: node {} shutdown: {}", cfg_.self, e.what());
  }
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
  if (pagemap_fd_ >= 0) ::close(pagemap_fd_);
}

void Node::add_region(std::string name, uint64_t gpa, void* host, uint64_t size) {
  if (started_) fail(EBUSY, "region '{}' added after start", name);
  const auto addr = reinterpret_cast<uintptr_t>(host);
  if (!host || addr % kPageSize || size == 0 || size % kPageSize || gpa % kPageSize)
    fail(EINVAL, "region '{}' must be page aligned and non-empty (host {}, gpa {:#x}, {} bytes)", name,
         host, gpa, size);
  for (const Region& r : regions_) {
    const auto raddr = reinterpret_cast<uintptr_t>(r.host);
    if (addr < raddr + r.size && raddr < addr + size)
      fail(EINVAL, "region '{}' overlaps region '{}' in host memory", name, r.name);
    if (gpa < r.gpa + r.size && r.gpa < gpa + size)
      fail(EINVAL, "region '{}' overlaps region '{}' in guest-physical memory", name, r.name);
  }
  if (regions_.size() >= PageKey::kMaxRegions) fail(EINVAL, "too many regions");
  region_by_host_[addr] = static_cast<uint32_t>(regions_.size());
  regions_.push_back(Region{std::move(name), gpa, static_cast<std::byte*>(host), size});
}

void Node::add_listener(NodeListener listener) {
  if (started_) fail(EBUSY, "node listener added after start");
  listeners_.push_back(std::move(listener));
}

void Node::register_service(uint16_t channel, ServiceHandler handler) {
  if (started_) fail(EBUSY, "service channel {} registered after start", channel);
  if (!services_.emplace(channel, std::move(handler)).second)
    fail(EEXIST, "service channel {} is already registered", channel);
}

std::string Node::describe_configuration() const {
  std::string d = fmt::format("aggvm-dsm/1 nodes={} page={} cluster={}\n", cfg_.n_nodes, kPageSize,
                              cfg_.cluster_name);
  for (const HomeRange& r : space_->homes().ranges())
    d += fmt::format("home {:#x}-{:#x} node {}\n", r.gpa_start, r.gpa_end, r.node);
  for (const Region& r : regions_) d += fmt::format("region {} gpa {:#x} size {}\n", r.name, r.gpa, r.size);
  if (cfg_.late.any()) d += fmt::format("late {:#x}\n", cfg_.late.to_ullong());
  return d;
}

void Node::start() {
  if (started_) fail(EBUSY, "node already started");
  std::vector<RegionInfo> infos;
  for (const Region& r : regions_) infos.push_back({r.name, r.gpa, r.size / kPageSize});
  space_ = std::make_unique<PageSpace>(infos, HomeMap(cfg_.homes, cfg_.n_nodes));

  const uint64_t cap_pages = cfg_.resident_cap_bytes / kPageSize;
  if (cap_pages) {
    const uint64_t homed = space_->pages_homed_on(cfg_.self);  // O(ranges): guests may be TBs
    if (cap_pages < homed + kFaultSlackPages)
      fail(EINVAL,
           "resident cap of {} KiB is below the {} KiB this node homes plus {} KiB for faults in flight",
           cap_pages * 4, homed * 4, kFaultSlackPages * 4);
  }
  engine_ = std::make_unique<Engine>(
      EngineOptions{.self = cfg_.self,
                    .n_nodes = cfg_.n_nodes,
                    .resident_cap_pages = cap_pages,
                    .timeout_ns = static_cast<uint64_t>(cfg_.timeout.count()) * 1'000'000},
      *space_, static_cast<Env&>(*this));

  if (cfg_.cpu_latency_us) cpu_latency_.emplace(*cfg_.cpu_latency_us);

  // Every copy starts Invalid: discard what the regions held.
  uffd_ = std::make_unique<Userfaultfd>();
  for (const Region& r : regions_) {
    if (::madvise(r.host, r.size, MADV_DONTNEED) != 0) fail_errno("madvise(MADV_DONTNEED) of region " + r.name);
    (void)::madvise(r.host, r.size, MADV_NOHUGEPAGE);  // coherence works on 4 KiB pages
    uffd_->register_range(r.host, r.size);
  }

  FabricConfig fc;
  fc.self = cfg_.self;
  fc.n_nodes = cfg_.n_nodes;
  fc.addresses = cfg_.addresses;
  fc.config_digest = config_digest(describe_configuration());
  fc.transports = cfg_.transports;
  fc.frame_protection = cfg_.frame_protection;
  fc.timeout = cfg_.timeout;
  fc.late = cfg_.late;
  fc.limits = [this] {
    return WireLimits{.self = cfg_.self, .n_nodes = cfg_.n_nodes, .region_pages = space_->region_pages()};
  };
  fabric_ = std::make_unique<Fabric>(std::move(fc), *key_);
  if (cfg_.late.test(cfg_.self)) {
    join();
  } else {
    fabric_->connect_all(static_cast<FabricSink&>(*this));
    // Late nodes are as nodes that left, until they join.
    for (NodeId n = 0; n < cfg_.n_nodes; ++n)
      if (fabric_->absent().test(n)) mark_gone(n);
  }
  // Once, before the guest runs: whether frames go over verbs, shared
  // memory or fell back to TCP (a late node's own connections log later,
  // in its own process; the members' only at debug level).
  log().info("aggvm-dsm: node {} connected; frames {} over {}", cfg_.self,
             cfg_.frame_protection == FrameProtection::kAesGcm ? "sealed (AES-256-GCM)" : "in clear",
             fabric_->frame_transports());
  // Silence counts from here: connecting may have taken far longer than
  // the timeout while the peers' processes started.
  liveness_.emplace(cfg_.self, cfg_.n_nodes, cfg_.timeout, std::chrono::steady_clock::now());

  // A developer's aid: every fault, to find the guest's pages that move
  // between nodes most (docs/dsm.md, "Which pages move").
  if (const char* path = std::getenv("AGGVM_DSM_FAULT_LOG")) {
    const std::string file = fmt::format("{}.node{}", path, cfg_.self);
    fault_log_.reset(std::fopen(file.c_str(), "we"));
    if (!fault_log_) fail_errno("opening the fault log " + file);
  }
  // For fetch()'s check of what is mapped here already; fetch() asks the
  // service thread instead when it cannot be read.
  pagemap_fd_ = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (wake_fd_ < 0 || epoll_fd_ < 0) fail_errno("eventfd/epoll_create1");
  for (int fd : {uffd_->fd(), fabric_->event_fd(), wake_fd_}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) fail_errno("epoll_ctl");
  }
  started_ = true;
  thread_ = std::thread([this] { run(); });
}

void Node::run() {
  pthread_setname_np(pthread_self(), "aggvm-dsm");
  struct ThreadHook {
    const std::function<void(bool)>& hook;
    explicit ThreadHook(const std::function<void(bool)>& h) : hook(h) {
      if (hook) hook(true);
    }
    ~ThreadHook() {
      if (hook) hook(false);
    }
  } thread_hook(cfg_.on_service_thread);
  auto next_scan = std::chrono::steady_clock::now() + kTimeoutScan;
  auto last_busy = std::chrono::steady_clock::now();
  try {
    while (true) {
      bool busy = fabric_->progress(static_cast<FabricSink&>(*this));
      busy |= serve_faults();
      busy |= serve_fetches();
      serve_commands();
      serve_home_moves();
      serve_drop_copies();
      serve_leave();
      serve_admissions();
      sync_counters();
      if (abandon_ || (left_ && goodbyes_read()) ||
          (stopping_ && goodbyes_.count() >= static_cast<size_t>(cfg_.n_nodes) && goodbyes_read()))
        break;
      if (stopping_) check_stop_deadline();
      {
        std::lock_guard lock(fail_mu_);
        if (failure_) break;
      }
      const auto now = std::chrono::steady_clock::now();
      if (now >= next_scan) {
        engine_->check_timeouts(now_ns());
        check_liveness(now);
        next_scan = now + kTimeoutScan;
      }
      if (busy) {
        last_busy = now;
        continue;
      }
      // Polling a little longer saves the wake-up of a sleeping thread
      // (tens of microseconds) when the next event comes soon.
      if (now - last_busy < cfg_.service_spin) continue;
      if (!fabric_->arm()) continue;
      epoll_event evs[4];
      const int n = ::epoll_wait(epoll_fd_, evs, 4, static_cast<int>(kTimeoutScan.count()));
      if (n < 0 && errno != EINTR) fail_errno("epoll_wait");
      for (int i = 0; i < n; ++i)
        if (evs[i].data.fd == wake_fd_) {
          uint64_t v;
          (void)::read(wake_fd_, &v, sizeof v);
        }
    }
  } catch (const PeerError& e) {
    fail_node(e.err(), e.node(), e.what());
  } catch (const DsmError& e) {
    fail_node(e.err(), -1, e.what());
  } catch (const std::exception& e) {
    fail_node(EIO, -1, e.what());
  }
  std::optional<DsmError> failure;
  {
    std::lock_guard lock(fail_mu_);
    failure = failure_;
  }
  const DsmError ended = failure ? *failure : DsmError(ECANCELED, fmt::format("node {} stopped", cfg_.self));
  end_home_moves(ended);
  end_fetches(ended);
  if (drop_) drop_->set_exception(std::make_exception_ptr(ended));
  drop_.reset();
  try {
    fabric_->close_all();  // flushes what was sent: a leaving node's goodbyes
  } catch (const std::exception& e) {
    log().warn("aggvm-dsm: node {} closing the fabric: {}", cfg_.self, e.what());
  }
  if (left_) left_->set_value();
  std::lock_guard lock(fail_mu_);
  finished_ = true;
  fail_cv_.notify_all();
}

bool Node::serve_faults() {
  FaultEvent events[64];
  size_t n;
  bool any = false;
  while ((n = uffd_->read_events(events)) > 0) {
    any = true;
    const uint64_t now = now_ns();
    for (size_t i = 0; i < n; ++i) {
      const FaultEvent& ev = events[i];
      auto it = region_by_host_.upper_bound(ev.address);
      if (it == region_by_host_.begin()) fail(EFAULT, "fault at {:#x} outside every region", ev.address);
      --it;
      const Region& r = regions_[it->second];
      const uint64_t offset = ev.address - reinterpret_cast<uintptr_t>(r.host);
      if (offset >= r.size) fail(EFAULT, "fault at {:#x} outside every region", ev.address);
      if (fault_log_)
        std::fprintf(fault_log_.get(), "%lu %#lx %d %d\n", static_cast<unsigned long>(now / 1'000'000),
                     static_cast<unsigned long>(r.gpa + offset), ev.write ? 1 : 0, ev.tid);
      engine_->on_fault(PageKey(it->second, offset / kPageSize), ev.write ? Access::kWrite : Access::kRead,
                        ev.tid, now);
    }
  }
  return any;
}

void Node::sync_counters() {
  if (engine_->homes().changes() != homes_changes_) {
    homes_changes_ = engine_->homes().changes();
    std::lock_guard lock(homes_mu_);
    homes_ = engine_->homes();
  }
  std::lock_guard lock(stats_mu_);
  counters_.resident_pages = engine_->cache().resident_pages();
  counters_.resident_peak_pages = engine_->cache().resident_peak_pages();
  counters_.evictions = engine_->counters().evictions;
  counters_.writebacks = engine_->counters().writebacks;
  counters_.rehomed_out_pages = engine_->counters().rehomed_out_pages;
  counters_.rehomed_in_pages = engine_->counters().rehomed_in_pages;
  counters_.redirects = engine_->counters().redirects;
  counters_.exclusive_grants = engine_->counters().exclusive_grants;
  counters_.silent_upgrades = engine_->counters().silent_upgrades;
  counters_.snapshot_pages = engine_->cache().snapshot_pages();
  counters_.peeked_pages = engine_->counters().snapshots;
  counters_.peeks_refused = engine_->counters().peeks_refused;
  counters_.peeks_answered = engine_->counters().peeks_answered;
  counters_.copied_pages = engine_->counters().copied;
}

// ---- moving homes -----------------------------------------------------------

std::vector<PageRange> Node::page_ranges(uint64_t gpa, uint64_t size) const {
  if (size == 0 || gpa % kPageSize || size % kPageSize || gpa + size < gpa)
    fail(EINVAL, "guest range [{:#x}, +{:#x}) is empty or not page aligned", gpa, size);
  std::vector<PageRange> out;
  uint64_t covered = 0;
  for (uint32_t i = 0; i < regions_.size(); ++i) {
    const Region& r = regions_[i];
    const uint64_t a = std::max(gpa, r.gpa), b = std::min(gpa + size, r.gpa + r.size);
    if (a >= b) continue;
    out.push_back(PageRange{.region = i, .first = (a - r.gpa) / kPageSize, .end = (b - r.gpa) / kPageSize});
    covered += b - a;
  }
  if (covered != size)
    fail(EINVAL, "guest range [{:#x}, {:#x}) is not all in registered regions", gpa, gpa + size);
  return out;
}

void Node::rehome(uint64_t gpa, uint64_t size, NodeId to) {
  if (!started_) fail(ENOTCONN, "node not started");
  if (to >= cfg_.n_nodes || to == cfg_.self)
    fail(EINVAL, "cannot move homes from node {} to node {} (the cluster has {})", cfg_.self, to, cfg_.n_nodes);
  throw_if_failed();
  HomeMove move{.ranges = page_ranges(gpa, size), .to = to, .done = {}};
  std::future<void> done = move.done.get_future();
  {
    std::lock_guard lock(cmd_mu_);
    if (ending_moves_) fail(ECANCELED, "node {} is stopping: no more home moves", cfg_.self);
    home_moves_.push_back(std::move(move));
  }
  wake_service();
  done.get();  // every step is bounded, and the service thread ends every move when it stops
}

NodeId Node::home_of(uint64_t gpa) const {
  std::lock_guard lock(homes_mu_);
  return homes_ ? homes_->home_of(gpa) : HomeMap(cfg_.homes, cfg_.n_nodes).home_of(gpa);
}

std::vector<HomeRange> Node::home_ranges() const {
  std::lock_guard lock(homes_mu_);
  const HomeMap& map = homes_ ? *homes_ : HomeMap(cfg_.homes, cfg_.n_nodes);
  return {map.ranges().begin(), map.ranges().end()};
}

// Service thread: starts the next range once the engine is done with one.
void Node::serve_home_moves() {
  if (home_move_ && engine_->moving_home()) return;
  while (true) {
    if (home_move_ && home_move_->ranges.empty()) {
      home_move_->done.set_value();
      home_move_.reset();
    }
    if (!home_move_) {
      std::lock_guard lock(cmd_mu_);
      if (home_moves_.empty() || stopping_) return;
      home_move_.emplace(std::move(home_moves_.front()));
      home_moves_.pop_front();
    }
    const PageRange r = home_move_->ranges.front();
    home_move_->ranges.erase(home_move_->ranges.begin());
    try {
      engine_->check_rehome(r, home_move_->to);
    } catch (const DsmError& e) {  // refused: nothing changed
      home_move_->done.set_exception(std::make_exception_ptr(e));
      home_move_.reset();
      continue;
    }
    engine_->rehome(r, home_move_->to, now_ns());  // what fails here fails the node
    if (engine_->moving_home()) return;
  }
}

void Node::throw_if_failed() const {
  std::lock_guard lock(fail_mu_);
  if (failure_) throw *failure_;
}

void Node::wake_service() {
  uint64_t one = 1;
  (void)::write(wake_fd_, &one, sizeof one);  // a full counter wakes it as well
}

std::future<void> Node::ask_service_thread(std::optional<std::promise<void>>& slot, const char* busy) {
  if (!started_) fail(ENOTCONN, "node not started");
  throw_if_failed();
  std::promise<void> request;
  std::future<void> done = request.get_future();
  {
    std::lock_guard lock(cmd_mu_);
    if (ending_moves_) fail(ECANCELED, "node {} is stopping", cfg_.self);
    if (slot) fail(EBUSY, "node {} is already {}", cfg_.self, busy);
    slot.emplace(std::move(request));
  }
  wake_service();
  return done;
}

void Node::drop_copies() {
  ask_service_thread(drop_request_, "dropping its copies").get();  // bounded: see serve_drop_copies()
}

// Service thread: a few hundred evictions in flight at a time.
void Node::serve_drop_copies() {
  if (!drop_) {
    std::lock_guard lock(cmd_mu_);
    if (!drop_request_) return;
    drop_.swap(drop_request_);
    drop_left_ = UINT64_MAX;
  }
  const auto now = std::chrono::steady_clock::now();
  const uint64_t left = engine_->shed_copies(256, now_ns());
  if (left < drop_left_) {
    drop_left_ = left;
    drop_deadline_ = now + cfg_.timeout;
  }
  if (left == 0) {
    drop_->set_value();
    drop_.reset();
  } else if (now > drop_deadline_) {
    drop_->set_exception(std::make_exception_ptr(
        DsmError(ETIMEDOUT, fmt::format("node {} still holds {} copies of pages homed elsewhere after {} ms "
                                        "without progress: threads here keep faulting them back",
                                        cfg_.self, left, cfg_.timeout.count()))));
    drop_.reset();
  }
}

// ---- fetching ahead of use ------------------------------------------------

// Enough requests in flight to keep the fabric and the peers busy while
// grants come back; bounded so that one fetch of a whole guest does not
// queue thousands of requests ahead of the vCPUs' faults.
constexpr size_t kFetchWindow = 256;
// Pages a peek keeps asked for at once: 16 runs of kMaxPeekRun, so that
// both memory services stay busy while the answers (256 KiB each) cross.
constexpr size_t kPeekWindow = 16 * kMaxPeekRun;
// Evictions a release leaves unacked at most: each home must ack each
// within the timeout, and a restore gives the whole guest back at once
// (512 MiB of write-backs at once took longer than 3 s to be acked here).
// One checkpoint chunk (16 MiB), so that a save's release rarely waits.
constexpr size_t kReleaseWindow = 4096;

void Node::fetch(uint64_t gpa, uint64_t size, Access access) {
  const AggvmDsmRange r{.gpa = gpa, .size = size};
  fetch(std::span(&r, 1), access);
}

uint64_t Node::fetch(std::span<const AggvmDsmRange> ranges, Access access) {
  Fetch f;
  f.ranges = page_ranges(ranges);
  f.access = access;
  if (mapped_here(f.ranges, access)) return 0;
  return run_fetch(std::move(f), "fetch");
}

uint64_t Node::peek(uint64_t gpa, uint64_t size) {
  const AggvmDsmRange r{.gpa = gpa, .size = size};
  return peek(std::span(&r, 1));
}

uint64_t Node::peek(std::span<const AggvmDsmRange> ranges) {
  Fetch f;
  f.ranges = page_ranges(ranges);
  f.peek = true;
  if (mapped_here(f.ranges, Access::kRead)) return 0;
  return run_fetch(std::move(f), "peek");
}

uint64_t Node::read(std::span<const AggvmDsmRange> ranges, std::span<std::byte> buf) {
  Fetch f;
  uint64_t pages = 0;  // of the buffer, so far
  for (const AggvmDsmRange& r : ranges) {
    for (const PageRange& piece : page_ranges(r.gpa, r.size)) {
      f.buf_page.push_back(pages + (regions_[piece.region].gpa + piece.first * kPageSize - r.gpa) / kPageSize);
      f.ranges.push_back(piece);
    }
    pages += r.size / kPageSize;
  }
  if (ranges.empty()) fail(EINVAL, "no guest range given");
  if (buf.size() != pages * kPageSize)
    fail(EINVAL, "a buffer of {} bytes for {} bytes of guest ranges", buf.size(), pages * kPageSize);
  auto copied = std::make_unique<bool[]>(pages);  // all false
  const std::vector<PageRange> pieces = f.ranges;
  const std::vector<uint64_t> bases = f.buf_page;
  uint64_t asked = 0;
  if (!mapped_here(f.ranges, Access::kRead)) {
    f.peek = true;
    f.copy_to = buf.data();
    f.copied = copied.get();
    asked = run_fetch(std::move(f), "read");
  }
  // The rest from guest RAM: held here, asked for already, or refused
  // and fetched.  A page taken away meanwhile faults back, coherent.
  for (size_t i = 0; i < pieces.size(); ++i)
    for (uint64_t p = pieces[i].first; p < pieces[i].end; ++p)
      if (const uint64_t at = bases[i] + (p - pieces[i].first); !copied[at])
        std::memcpy(buf.data() + at * kPageSize, host(PageKey(pieces[i].region, p)), kPageSize);
  return asked;
}

void Node::release(uint64_t gpa, uint64_t size) {
  const AggvmDsmRange r{.gpa = gpa, .size = size};
  release(std::span(&r, 1));
}

void Node::release(std::span<const AggvmDsmRange> ranges) {
  Fetch f;
  f.ranges = page_ranges(ranges);
  f.release = true;
  run_fetch(std::move(f), "release");
}

// Every range checked before any is used: a bad one asks for nothing.
std::vector<PageRange> Node::page_ranges(std::span<const AggvmDsmRange> ranges) const {
  if (ranges.empty()) fail(EINVAL, "no guest range given");
  std::vector<PageRange> out;
  for (const AggvmDsmRange& r : ranges) {
    const std::vector<PageRange> pieces = page_ranges(r.gpa, r.size);
    out.insert(out.end(), pieces.begin(), pieces.end());
  }
  return out;
}

uint64_t Node::run_fetch(Fetch f, std::string_view what) {
  if (std::this_thread::get_id() == thread_.get_id())
    fail(EDEADLK, "node {}: {} called on the memory service's own thread", cfg_.self, what);
  std::future<uint64_t> done = f.done.get_future();
  if (!started_) fail(ENOTCONN, "node not started");
  throw_if_failed();
  {
    std::lock_guard lock(cmd_mu_);
    if (ending_moves_) fail(ECANCELED, "node {} is stopping", cfg_.self);
    fetch_requests_.push_back(std::move(f));
  }
  wake_service();
  return done.get();  // bounded: each request by the timeout, or the node fails
}

// From the caller's thread, without the service thread's state: the
// kernel's page table says whether each page is mapped (held at least
// Shared) and, for writing, not write-protected (held Modified).  A page
// may be taken away right after: its user then faults as usual.
//
// The ranges are read in order of host address, one pread() for each
// window of up to 512 pages that holds them: a device's buffer of 256
// scattered pages near one another costs a few system calls, not 256
// (0.7 us each here).
bool Node::mapped_here(const std::vector<PageRange>& ranges, Access access) const {
  constexpr uint64_t kPresent = uint64_t{1} << 63, kUffdWp = uint64_t{1} << 57;
  constexpr uint64_t kWindow = 512;
  if (pagemap_fd_ < 0) return false;
  struct Span {
    uint64_t first, end;  // host page numbers
  };
  std::vector<Span> spans;  // none longer than a window
  spans.reserve(ranges.size());
  for (const PageRange& r : ranges) {
    const uint64_t first = reinterpret_cast<uintptr_t>(host(PageKey(r.region, r.first))) / kPageSize;
    for (uint64_t at = first; at < first + r.pages(); at += kWindow)
      spans.push_back({at, std::min(at + kWindow, first + r.pages())});
  }
  std::ranges::sort(spans, {}, &Span::first);
  std::array<uint64_t, kWindow> entries;
  for (size_t i = 0; i < spans.size();) {
    // A window from spans[i].first: the spans that end within it, whole.
    const uint64_t start = spans[i].first;
    size_t j = i;
    uint64_t end = start;
    while (j < spans.size() && spans[j].end - start <= kWindow) end = std::max(end, spans[j++].end);
    const ssize_t got = ::pread(pagemap_fd_, entries.data(), (end - start) * sizeof(uint64_t),
                                static_cast<off_t>(start * sizeof(uint64_t)));
    if (got != static_cast<ssize_t>((end - start) * sizeof(uint64_t))) return false;
    for (; i < j; ++i)
      for (uint64_t page = spans[i].first; page < spans[i].end; ++page) {
        const uint64_t e = entries[page - start];
        if (!(e & kPresent) || (access == Access::kWrite && (e & kUffdWp))) return false;
      }
  }
  return true;
}

bool Node::held_for(PageKey page, Access access) const {
  const PageState s = engine_->cache().state(page);
  return access == Access::kRead ? s != PageState::kInvalid : s == PageState::kModified;
}

// Service thread: one fetch (or release) at a time, kFetchWindow pages in flight.
bool Node::serve_fetches() {
  if (!fetch_) {
    std::lock_guard lock(cmd_mu_);
    if (fetch_requests_.empty()) return false;
    fetch_.emplace(std::move(fetch_requests_.front()));
    fetch_requests_.pop_front();
    fetch_->next = fetch_->ranges.front().first;
  }
  Fetch& f = *fetch_;
  // A request ends with its grant.  A page taken away again since (a peer
  // wrote it) is not asked for twice: whoever touches it faults as usual.
  const size_t before = f.in_flight.size();
  std::erase_if(f.in_flight, [&](PageKey p) { return engine_->cache().pending(p) == Cache::Pending::kNone; });
  bool progress = f.in_flight.size() != before;
  uint64_t asked = 0;
  const uint64_t now = now_ns();
  while (f.in_flight.size() < (f.peek ? kPeekWindow : kFetchWindow) && f.range < f.ranges.size()) {
    const PageRange& r = f.ranges[f.range];
    if (f.next >= r.end) {
      if (++f.range < f.ranges.size()) f.next = f.ranges[f.range].first;
      continue;
    }
    if (f.release) {
      // Up to kReleaseWindow pages at once, each run unmapped in one call.
      // The last window's acks are not waited for: the caller goes on at
      // once, and each eviction is bounded by the timeout like any request.
      const size_t unacked = engine_->cache().requests_in_flight();
      if (unacked >= kReleaseWindow) break;  // the service loop comes back as acks arrive
      const uint64_t n = std::min<uint64_t>(r.end - f.next, kReleaseWindow - unacked);
      asked += engine_->release(PageKey(r.region, f.next), n, now);
      f.next += n;
      progress = true;
      continue;
    }
    progress = true;
    if (f.peek) {
      // A run of pages to each home per message (protocol/peek.h).
      const uint64_t n = std::min<uint64_t>({r.end - f.next, kMaxPeekRun, kPeekWindow - f.in_flight.size()});
      const uint64_t at = f.copy_to ? f.buf_page[f.range] + (f.next - r.first) : 0;
      f.asked += engine_->peek(PageKey(r.region, f.next), n, now, f.copy_to ? f.copy_to + at * kPageSize : nullptr,
                               f.copy_to ? f.copied + at : nullptr);
      for (uint64_t k = 0; k < n; ++k)
        if (engine_->cache().pending(PageKey(r.region, f.next + k)) != Cache::Pending::kNone)
          f.in_flight.push_back(PageKey(r.region, f.next + k));
      f.next += n;
      continue;
    }
    const PageKey page(r.region, f.next++);
    if (held_for(page, f.access)) continue;
    engine_->fetch(page, f.access, now);
    ++asked;
    // An Exclusive copy becomes writable at once, without a request.
    if (engine_->cache().pending(page) != Cache::Pending::kNone) f.in_flight.push_back(page);
  }
  if (asked) {  // a peek's are the engine's (snapshots)
    std::lock_guard lock(stats_mu_);
    (f.release ? counters_.released_pages : counters_.fetched_pages) += asked;
  }
  f.asked += asked;
  if (f.range == f.ranges.size() && f.in_flight.empty()) {
    sync_counters();  // the caller may read the statistics as soon as it returns
    f.done.set_value(f.asked);
    fetch_.reset();
  }
  return progress;
}

void Node::end_fetches(const DsmError& why) {
  std::lock_guard lock(cmd_mu_);
  if (fetch_) fetch_->done.set_exception(std::make_exception_ptr(why));
  fetch_.reset();
  for (Fetch& f : fetch_requests_) f.done.set_exception(std::make_exception_ptr(why));
  fetch_requests_.clear();
}

uint64_t Node::pages_homed_here() const {
  uint64_t bytes = 0;
  for (const Region& r : regions_) bytes += engine_->homes().bytes_homed_on(cfg_.self, r.gpa, r.size);
  return bytes / kPageSize;
}

void Node::leave() {
  // Refused (EBUSY), or the service thread said goodbye and ended.
  ask_service_thread(leave_request_, "leaving").get();
  if (thread_.joinable()) thread_.join();
  started_ = false;
  fabric_.reset();
  // Nothing is homed or held here: unregistering changes no page anyone sees.
  for (const Region& r : regions_) uffd_->unregister_range(r.host, r.size);
  uffd_.reset();
  log().info("aggvm-dsm: node {} left the cluster", cfg_.self);
}

// Service thread: leaves only when it holds nothing any peer could need.
void Node::serve_leave() {
  std::optional<std::promise<void>> request;
  {
    std::lock_guard lock(cmd_mu_);
    if (!leave_request_ || stopping_) return;
    request.swap(leave_request_);
  }
  const uint64_t homed = pages_homed_here(), held = engine_->cache().resident_pages();
  if (homed || held || !engine_->idle() || home_move_ || drop_) {
    request->set_exception(std::make_exception_ptr(DsmError(
        EBUSY, fmt::format("node {} cannot leave: it homes {} pages and holds {} (move their homes and drop "
                           "its copies first){}",
                           cfg_.self, homed, held, engine_->idle() ? "" : ", and requests are in flight"))));
    return;
  }
  notify_finished(ECANCELED, fmt::format("node {} left the cluster", cfg_.self));
  send_goodbyes();
  left_.swap(request);  // the loop ends once every peer read the goodbye
}

// A node closes its connections only once every peer has read its goodbye
// (acked it, or closed after its own goodbye, which it says only once it
// has ours): closing earlier, the reset could overtake the goodbye, and the
// peer would take the end for the loss of a node.  Bounded by the timeout.
bool Node::goodbyes_read() {
  if (awaiting_goodbye_acks_.none()) return true;
  if (std::chrono::steady_clock::now() < goodbyes_deadline_) return false;
  log().warn("aggvm-dsm: node {} ends without the acks of {} peers to its goodbye (timeout {} ms)", cfg_.self,
               awaiting_goodbye_acks_.count(), cfg_.timeout.count());
  awaiting_goodbye_acks_.reset();
  return true;
}

void Node::end_home_moves(const DsmError& why) {
  std::lock_guard lock(cmd_mu_);
  ending_moves_ = true;
  if (home_move_) home_move_->done.set_exception(std::make_exception_ptr(why));
  home_move_.reset();
  for (HomeMove& m : home_moves_) m.done.set_exception(std::make_exception_ptr(why));
  home_moves_.clear();
}

void Node::serve_commands() {
  std::vector<Outgoing> out;
  {
    std::lock_guard lock(cmd_mu_);
    out.swap(outgoing_);
  }
  for (const Outgoing& o : out) {
    Message m;
    m.type = MsgType::kService;
    m.src = cfg_.self;
    m.dst = o.to;
    m.txn = o.channel;
    m.payload = o.data;
    if (o.to == cfg_.self) {
      if (auto it = services_.find(o.channel); it != services_.end()) it->second(cfg_.self, o.data);
      continue;
    }
    send(m);
  }
  if (stop_requested_ && !stopping_) {
    stopping_ = true;
    stop_deadline_ = std::chrono::steady_clock::now() + cfg_.timeout;
    send_goodbyes();
  }
}

// The stop barrier waits for every peer's goodbye at most the node's timeout.
void Node::check_stop_deadline() {
  if (std::chrono::steady_clock::now() < stop_deadline_) return;
  if (goodbyes_.count() >= static_cast<size_t>(cfg_.n_nodes)) return;  // only acks are missing: goodbyes_read()
  std::string missing;
  int blamed = -1;
  for (NodeId n = 0; n < cfg_.n_nodes; ++n) {
    if (goodbyes_.test(n)) continue;
    missing += fmt::format("{}{}", missing.empty() ? "" : ", ", n);
    blamed = blamed == -1 ? n : -2;  // -2: more than one
  }
  const std::string what = fmt::format("stop barrier: node{} {} did not say goodbye within {} ms",
                                       blamed == -2 ? "s" : "", missing, cfg_.timeout.count());
  if (blamed >= 0) throw PeerError(ETIMEDOUT, static_cast<NodeId>(blamed), what);
  fail(ETIMEDOUT, "{}", what);
}

void Node::send_goodbyes() {
  goodbyes_.set(cfg_.self);
  awaiting_goodbye_acks_.reset();
  for (NodeId n = 0; n < cfg_.n_nodes; ++n)
    if (n != cfg_.self && !closed_after_goodbye_.test(n)) awaiting_goodbye_acks_.set(n);
  goodbyes_deadline_ = std::chrono::steady_clock::now() + cfg_.timeout;
  pb::Control bye;
  bye.mutable_goodbye();
  const std::string bytes = bye.SerializeAsString();
  for (NodeId n = 0; n < cfg_.n_nodes; ++n)
    if (n != cfg_.self) send_control(n, bytes);
}

void Node::send_control(NodeId to, const std::string& bytes) {
  Message m;
  m.type = MsgType::kControl;
  m.src = cfg_.self;
  m.dst = to;
  m.payload = std::as_bytes(std::span(bytes));
  send(m);
}

// Heartbeats out; a peer silent for a whole timeout has failed, even one
// whose connection is still up (frozen, or its host hung).  While this
// node stops, the stop barrier's own deadline judges the peers instead.
void Node::check_liveness(std::chrono::steady_clock::time_point now) {
  if (stopping_) return;
  if (liveness_->beat_due(now)) {
    pb::Control beat;
    const AggvmDsmNodeStats mine = stats();
    auto* hb = beat.mutable_heartbeat();
    hb->set_resident_pages(mine.resident_pages);
    hb->set_read_faults(mine.faults.read_faults);
    hb->set_write_faults(mine.faults.write_faults);
    const std::string bytes = beat.SerializeAsString();
    for (NodeId n = 0; n < cfg_.n_nodes; ++n)
      if (n != cfg_.self && !goodbyes_.test(n)) send_control(n, bytes);
  }
  if (auto silent = liveness_->silent_peer(now, goodbyes_))
    fail_peer(*silent, ETIMEDOUT,
              "node {} ({}) sent nothing, not even a heartbeat, for {} ms (timeout {} ms): it is frozen or cut off",
              *silent, cfg_.addresses[*silent], liveness_->silence(*silent, now).count(), cfg_.timeout.count());
}

void Node::stop() {
  if (!started_) return;
  notify_finished(ECANCELED, fmt::format("node {} is stopping", cfg_.self));
  stop_requested_ = true;
  wake_service();
  // Peers may still be working: wait for their goodbyes, or a failure.
  if (thread_.joinable()) thread_.join();
  started_ = false;
  throw_if_failed();
}

void Node::abandon() {
  if (started_) {
    notify_finished(ECANCELED, fmt::format("node {} was abandoned", cfg_.self));
    abandon_ = true;  // no barrier
    if (wake_fd_ >= 0) {
      wake_service();
    }
    if (thread_.joinable()) thread_.join();
    started_ = false;
  }
  fabric_.reset();
  if (uffd_) {
    // Unregistering wakes every thread blocked on these ranges.
    for (const Region& r : regions_) uffd_->unregister_range(r.host, r.size);
    uffd_.reset();
  }
}

void Node::poison_lost() {
  {
    std::lock_guard lock(fail_mu_);
    if (!failure_) fail(EBUSY, "node {} has not failed: only a failed node poisons the memory it lost", cfg_.self);
  }
  if (!uffd_) fail(EINVAL, "node {} holds no guest memory any more (abandoned)", cfg_.self);
  if (poisoned_) return;
  if (!uffd_->can_poison())
    fail(ENOTSUP, "node {}: this kernel cannot poison guest memory (UFFD_FEATURE_POISON needs Linux 6.6+)",
         cfg_.self);
  if (started_) {
    notify_finished(ECANCELED, fmt::format("node {} was stopped to poison lost memory", cfg_.self));
    abandon_ = true;  // no barrier: the cluster failed
    uint64_t one = 1;
    if (::write(wake_fd_, &one, sizeof one) < 0 && errno != EAGAIN) fail_errno("write(eventfd)");
    if (thread_.joinable()) thread_.join();
    started_ = false;
  }
  fabric_.reset();
  // The service thread is gone: the engine's page states are final.  Every
  // Invalid page is lost here (its content is on a peer or unknown): poison
  // it, in runs.  Shared and Modified pages are mapped and keep their data,
  // and so do snapshots (protocol/peek.h): read while nobody wrote.
  // A page being written back is unmapped, but its last Modified content
  // is here: it is mapped again, not poisoned.
  uint64_t pages = 0, runs = 0, ioctls = 0, restored = 0;
  const Cache& cache = engine_->cache();
  for (uint32_t ri = 0; ri < regions_.size(); ++ri) {
    const uint64_t n = regions_[ri].size / kPageSize;
    auto lost = [&](uint64_t i) {
      const PageKey p(ri, i);
      return cache.state(p) == PageState::kInvalid && !cache.writeback_copy(p) && !cache.snapshot(p);
    };
    for (uint64_t i = 0; i < n;) {
      if (!lost(i)) {
        const PageKey p(ri, i);
        if (const std::byte* data = cache.writeback_copy(p); data && cache.state(p) == PageState::kInvalid) {
          uffd_->copy(host(p), data, kPageSize, true);  // writable: see below
          ++restored;
        }
        ++i;
        continue;
      }
      uint64_t j = i + 1;
      while (j < n && lost(j)) ++j;
      ioctls += uffd_->poison(host(PageKey(ri, i)), (j - i) * kPageSize);
      pages += j - i;
      ++runs;
      i = j;
    }
  }
  // A thread writing a page held Shared here would block for good, and a
  // vCPU thread that cannot run cannot pause either, so the embedder's stop
  // would never complete.  That holds for the writers blocked now and for
  // any later one (a vCPU still running until its stop, one whose fault
  // the service thread never read): every Shared page becomes writable,
  // and the writes go to this node's copy, which is valid and which no
  // other node will ever see now.  Clearing the protection wakes waiters.
  uint64_t released = 0;
  for (uint32_t ri = 0; ri < regions_.size(); ++ri) {
    const uint64_t n = regions_[ri].size / kPageSize;
    auto shared = [&](uint64_t i) {
      const PageState s = cache.state(PageKey(ri, i));
      // All mapped write-protected.
      return s == PageState::kShared || s == PageState::kExclusive || cache.snapshot(PageKey(ri, i));
    };
    for (uint64_t i = 0; i < n;) {
      if (!shared(i)) {
        ++i;
        continue;
      }
      uint64_t j = i + 1;
      while (j < n && shared(j)) ++j;
      uffd_->write_protect(host(PageKey(ri, i)), (j - i) * kPageSize, false);
      released += j - i;
      i = j;
    }
  }
  poisoned_ = true;
  log().warn("aggvm-dsm: node {} poisoned {} lost pages in {} runs ({} ioctls), restored {} written back; made "
               "the {} pages it holds shared writable", cfg_.self, pages, runs, ioctls, restored, released);
}

void Node::fail_node(int err, int node, const std::string& message) {
  if (node == cfg_.self || node >= cfg_.n_nodes) node = -1;
  {
    std::lock_guard lock(fail_mu_);
    if (failure_) return;
    failure_.emplace(err, fmt::format("aggvm-dsm node {}: {}", cfg_.self, message));
    failed_node_ = node;
    fail_cv_.notify_all();
  }
  log().error("aggvm-dsm: node {} failed: {}", cfg_.self, message);
  // The embedder hears of the failure before any call in flight ends with
  // it: whoever sees a call fail may rely on on_failure having run.
  if (cfg_.on_failure) cfg_.on_failure(err, node, failure_->what());
  notify_finished(err, failure_->what());
}

// Once: stop, abandon or failure, whichever comes first.
void Node::notify_finished(int err, const std::string& why) {
  if (finished_notified_.exchange(true)) return;
  for (const NodeListener& l : listeners_)
    if (l.finished) l.finished(err, why);
}

int Node::failed_node() const {
  std::lock_guard lock(fail_mu_);
  return failure_ ? failed_node_ : -1;
}

std::optional<DsmError> Node::wait_failure(std::chrono::milliseconds timeout) {
  std::unique_lock lock(fail_mu_);
  fail_cv_.wait_for(lock, timeout, [&] { return failure_.has_value(); });
  return failure_;
}

void Node::send_service(NodeId to, uint16_t channel, std::span<const std::byte> data) {
  if (to >= cfg_.n_nodes) fail(EINVAL, "service message to node {}, which does not exist", to);
  if (data.size() > kMaxServicePayload)
    fail(EMSGSIZE, "service message of {} bytes exceeds {}", data.size(), kMaxServicePayload);
  if (!started_) fail(ENOTCONN, "node not started");
  throw_if_failed();
  {
    std::lock_guard lock(cmd_mu_);
    outgoing_.push_back(Outgoing{to, channel, {data.begin(), data.end()}});
  }
  wake_service();
}

AggvmDsmNodeStats Node::stats() const {
  AggvmDsmNodeStats s;
  {
    std::lock_guard lock(stats_mu_);
    s = counters_;
  }
  s.faults = faults_.node_faults();
  return s;
}

bool Node::peer_stats(NodeId node, AggvmDsmPeerStats* out) const {
  std::lock_guard lock(stats_mu_);
  if (node >= peer_figures_.size() || !peer_figures_[node].known) return false;
  *out = peer_figures_[node].stats;
  out->age_ms = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          std::chrono::steady_clock::now() - peer_figures_[node].when)
                                          .count());
  return true;
}

// ---- Env: the engine's requests, carried out on this node ----------------

void Node::send(const Message& m) {
  const auto header = encode_header(m);
  try {
    fabric_->send(m.dst, header, m.payload);
  } catch (const PeerError&) {
    throw;
  } catch (const DsmError& e) {
    // A peer that said goodbye may be gone: what it was sent no longer
    // matters to it (it holds nothing), and its leaving is no failure.
    if (goodbyes_.test(m.dst)) return;
    throw PeerError(e.err(), m.dst, e.what());  // its connection is gone
  }
  std::lock_guard lock(stats_mu_);
  counters_.messages_sent++;
  counters_.bytes_sent += page_bytes(m.type, m.flags, m.payload);
}

void Node::install(PageKey page, std::span<const std::byte> data, bool writable) {
  // No on_page_change: a page is installed only where none was mapped, and
  // nothing can have been translated from a page that was never there
  // since its last drop (which did report).
  uffd_->copy(host(page), data.empty() ? kZeroPage.data() : data.data(), kPageSize, writable);
}

void Node::install_range(PageKey first, uint64_t count, std::span<const std::byte> data) {
  uffd_->copy(host(first), data.data(), count * kPageSize, false);
}

void Node::set_writable(PageKey page) { uffd_->write_protect(host(page), kPageSize, false); }
void Node::write_protect(PageKey page) { uffd_->write_protect(host(page), kPageSize, true); }
void Node::write_protect_range(PageKey first, uint64_t count) {
  uffd_->write_protect(host(first), count * kPageSize, true);
}
void Node::read(PageKey page, PageBuffer out) {
  // The service thread must never fault on its own userfaultfd: nobody
  // would resolve it.  Only pages mapped here are read (item 4 of issue 9).
  if (engine_->cache().state(page) == PageState::kInvalid)
    fail(EFAULT, "service thread asked to read page {:#x}, which is not mapped here", space_->gpa(page));
  std::memcpy(out.data(), host(page), kPageSize);
}

void Node::drop(PageKey page) {
  if (::madvise(host(page), kPageSize, MADV_DONTNEED) != 0) fail_errno("madvise(MADV_DONTNEED)");
  if (cfg_.on_page_change) cfg_.on_page_change(space_->gpa(page), kPageSize);
}

void Node::drop_range(PageKey first, uint64_t count) {
  if (::madvise(host(first), count * kPageSize, MADV_DONTNEED) != 0) fail_errno("madvise(MADV_DONTNEED)");
  if (cfg_.on_page_change) cfg_.on_page_change(space_->gpa(first), count * kPageSize);
}

void Node::release_range(PageKey first, uint64_t count) {
  if (::madvise(host(first), count * kPageSize, MADV_DONTNEED) != 0) fail_errno("madvise(MADV_DONTNEED)");
  const auto& report = cfg_.on_page_release ? cfg_.on_page_release : cfg_.on_page_change;
  if (report) report(space_->gpa(first), count * kPageSize);
}

void Node::wake(PageKey page) { uffd_->wake(host(page), kPageSize); }

void Node::resolved(PageKey page, const Waiter& w, NodeId home, uint64_t now) {
  if (w.tid == kNoThread) return;  // fetched ahead (serve_fetches()): not a fault
  faults_.record(w.tid, space_->gpa(page), w.access, home, home == cfg_.self, now - w.start_ns);
}

void Node::rejected(NodeId from, std::string_view why) {
  log().warn("aggvm-dsm: node {} rejected a message from node {}: {}", cfg_.self, from, why);
  std::lock_guard lock(stats_mu_);
  counters_.messages_rejected++;
}

// ---- FabricSink -----------------------------------------------------------

void Node::on_frame(NodeId from, const WireHeader& h, std::span<const std::byte> payload) {
  {
    std::lock_guard lock(stats_mu_);
    counters_.messages_received++;
    counters_.bytes_received += page_bytes(static_cast<MsgType>(h.type), h.flags, payload);
  }
  if (liveness_) liveness_->heard(from, std::chrono::steady_clock::now());
  const auto type = static_cast<MsgType>(h.type);
  if (type == MsgType::kControl) {
    pb::Control msg;
    if (!msg.ParseFromArray(payload.data(), static_cast<int>(payload.size())) ||
        !(msg.has_goodbye() || msg.has_heartbeat() || msg.has_goodbye_ack() || msg.has_welcome() ||
          msg.has_joined()))
      return rejected(from, "unexpected control message");
    if (msg.has_heartbeat()) {
      std::lock_guard lock(stats_mu_);
      if (peer_figures_.size() < cfg_.n_nodes) peer_figures_.resize(cfg_.n_nodes);
      auto& f = peer_figures_.at(from);
      f.stats.resident_pages = msg.heartbeat().resident_pages();
      f.stats.read_faults = msg.heartbeat().read_faults();
      f.stats.write_faults = msg.heartbeat().write_faults();
      f.when = std::chrono::steady_clock::now();
      f.known = true;
      return;
    }
    if (msg.has_welcome()) return on_welcome(from, msg.welcome());
    if (msg.has_joined()) {
      std::lock_guard lock(cmd_mu_);
      if (cfg_.self != 0 || !welcomed_.test(from)) return rejected(from, "joined, but was not welcomed");
      welcomed_.reset(from);
      log().info("aggvm-dsm: node {} joined: it is connected to every node", from);
      return;
    }
    if (msg.has_goodbye_ack()) {
      awaiting_goodbye_acks_.reset(from);
      return;
    }
    pb::Control ack;
    ack.mutable_goodbye_ack();
    send_control(from, ack.SerializeAsString());
    said_goodbye(from);
    for (const NodeListener& l : listeners_)
      if (l.peer_leaving) l.peer_leaving(from);
    return;
  }
  if (type == MsgType::kService) {
    auto it = services_.find(static_cast<uint16_t>(h.txn));
    if (it == services_.end()) return rejected(from, fmt::format("no service on channel {}", h.txn));
    it->second(from, payload);
    return;
  }
  if (type == MsgType::kInvalidate) {
    std::lock_guard lock(stats_mu_);
    counters_.invalidations_received++;
  }
  engine_->on_message(to_message(h, payload), now_ns());
}

void Node::on_peer_lost(NodeId peer, const std::string& why) {
  if (goodbyes_.test(peer)) {  // it finished and left
    closed_after_goodbye_.set(peer);
    awaiting_goodbye_acks_.reset(peer);
    return;
  }
  fail_peer(peer, ECONNRESET, "lost node {} ({}): {}", peer, cfg_.addresses[peer], why);
}

// ---- late nodes: joining a running cluster --------------------------------

// A late node's start(): node 0 admits it with the members and the homes as
// they are now (they may have moved since start); then it connects to the
// other members and says it joined.  Bounded: node 0 holds admissions only
// while homes move.
void Node::join() {
  constexpr int kAdmissionTimeouts = 10;
  joining_ = true;
  fabric_->connect(static_cast<FabricSink&>(*this), NodeSet().set(0));
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + kAdmissionTimeouts * cfg_.timeout;
  auto next_beat = start;
  pb::Control beat;
  beat.mutable_heartbeat();
  const std::string beat_bytes = beat.SerializeAsString();
  while (!welcome_) {
    fabric_->progress(static_cast<FabricSink&>(*this));
    const auto now = std::chrono::steady_clock::now();
    if (now >= next_beat) {  // node 0 counts silence from our handshake on
      send_control(0, beat_bytes);
      next_beat = now + cfg_.timeout / 4;
    }
    if (now > deadline)
      fail(ETIMEDOUT, "node 0 did not admit node {} within {} ms (it holds admissions while homes move)", cfg_.self,
           kAdmissionTimeouts * cfg_.timeout.count());
    if (fabric_->arm()) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  const auto& [members, homes] = *welcome_;
  engine_->adopt_homes(HomeMap(homes, cfg_.n_nodes));  // validated by on_welcome()
  {
    std::lock_guard lock(homes_mu_);
    homes_ = engine_->homes();
  }
  for (NodeId n = 0; n < cfg_.n_nodes; ++n)
    if (n != cfg_.self && !members.test(n)) mark_gone(n);
  fabric_->connect(static_cast<FabricSink&>(*this), members);
  pb::Control joined;
  joined.mutable_joined();
  send_control(0, joined.SerializeAsString());
  joining_ = false;
  log().info("aggvm-dsm: node {} joined the running cluster ({} members)", cfg_.self, members.count());
}

void Node::on_welcome(NodeId from, const pb::Welcome& w) {
  if (!joining_ || from != 0 || welcome_) return rejected(from, "welcome to a node that is not joining");
  const NodeSet members(w.members());
  if (!members.test(0) || !members.test(cfg_.self) || (members >> cfg_.n_nodes).any())
    fail(EPROTO, "node 0's welcome names members {:#x}, which do not fit a cluster of {} nodes with node {}",
         w.members(), cfg_.n_nodes, cfg_.self);
  std::vector<HomeRange> homes;
  for (const pb::HomeRangeMsg& r : w.homes()) {
    if (r.node() >= cfg_.n_nodes || !members.test(r.node()) || r.node() == cfg_.self)
      fail(EPROTO, "node 0's welcome homes [{:#x}, {:#x}) on node {}, which cannot be home now", r.gpa_start(),
           r.gpa_end(), r.node());
    homes.push_back(HomeRange{r.gpa_start(), r.gpa_end(), static_cast<NodeId>(r.node())});
  }
  HomeMap(homes, cfg_.n_nodes);  // validates the ranges (EINVAL)
  welcome_.emplace(members, std::move(homes));
}

// Not in the cluster now: told nothing, waited for by no barrier, never
// blamed; calls to it end at once.  As for a node that left.
void Node::mark_gone(NodeId peer) {
  said_goodbye(peer);
  closed_after_goodbye_.set(peer);
}

// The peer leaves (or is not there): the engine tells it nothing more, and
// waits for it in nothing (a move of homes, say).
void Node::said_goodbye(NodeId peer) {
  goodbyes_.set(peer);
  leaving_.fetch_or(uint64_t{1} << peer, std::memory_order_release);
  engine_->set_gone(goodbyes_);
}

// Service thread: a late node authenticated to this node.
void Node::on_peer_joined(NodeId peer) {
  goodbyes_.reset(peer);
  closed_after_goodbye_.reset(peer);
  leaving_.fetch_and(~(uint64_t{1} << peer), std::memory_order_release);
  engine_->set_gone(goodbyes_);
  if (liveness_) liveness_->heard(peer, std::chrono::steady_clock::now());
  if (cfg_.self != 0) return;
  std::lock_guard lock(cmd_mu_);
  to_welcome_.set(peer);
}

// Node 0's service thread: welcomes the late nodes waiting, unless held.
void Node::serve_admissions() {
  NodeSet now;
  {
    std::lock_guard lock(cmd_mu_);
    if (admissions_held_ || to_welcome_.none()) return;
    now = std::exchange(to_welcome_, {});
    welcomed_ |= now;
  }
  pb::Control msg;
  pb::Welcome* w = msg.mutable_welcome();
  NodeSet members;
  for (NodeId n = 0; n < cfg_.n_nodes; ++n)
    if (!goodbyes_.test(n)) members.set(n);
  w->set_members(members.to_ullong());
  for (const HomeRange& r : engine_->homes().ranges()) {
    pb::HomeRangeMsg* m = w->add_homes();
    m->set_gpa_start(r.gpa_start);
    m->set_gpa_end(r.gpa_end);
    m->set_node(r.node);
  }
  const std::string bytes = msg.SerializeAsString();
  for (NodeId n = 0; n < cfg_.n_nodes; ++n)
    if (now.test(n)) {
      log().info("aggvm-dsm: node 0 admits node {} ({} members, {} home ranges)", n, members.count(),
                 w->homes_size());
      send_control(n, bytes);
    }
}

void Node::hold_admissions(bool hold) {
  if (cfg_.self != 0) fail(EINVAL, "node {} admits nobody: node 0 does", cfg_.self);
  std::lock_guard lock(cmd_mu_);
  if (hold && welcomed_.any())
    fail(EBUSY, "node {} is joining the cluster: moving homes now would not reach it", welcomed_._Find_first());
  admissions_held_ = hold;
  if (!hold && to_welcome_.any() && wake_fd_ >= 0) {
    wake_service();
  }
}

void Node::on_rejected(const std::string& who, const std::string& why) {
  log().warn("aggvm-dsm: node {} rejected {}: {}", cfg_.self, who, why);
  std::lock_guard lock(stats_mu_);
  counters_.messages_rejected++;
}

}  // namespace aggvm::dsm
