/*
 * libaggvm-dsm: coherent guest memory across hosts.
 *
 * C API for QEMU and other C callers.  One AggvmDsm is one node of a
 * cluster of N nodes (one per host).  Each node registers the same memory
 * regions (guest RAM blocks) at the same guest-physical addresses; the
 * library keeps them sequentially consistent with a directory protocol
 * (Invalid / Shared / Modified per page and node) driven by userfaultfd.
 *
 * Threading: every function may be called from any thread.  Callbacks
 * (on_failure, on_page_change, service handlers) run on the library's own
 * service thread: they must not block and must never wait for a lock that a
 * thread touching guest memory may hold (QEMU's BQL, for instance).
 *
 * Errors: functions returning int return 0 on success or a negative errno;
 * when errmsg is non-NULL it then receives a message to release with
 * aggvm_dsm_free_error().
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef AGGVM_DSM_H
#define AGGVM_DSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AGGVM_DSM_MAX_NODES 64
#define AGGVM_DSM_PAGE_SIZE 4096u

typedef struct AggvmDsm AggvmDsm;

/* Pages with guest-physical address in [gpa_start, gpa_end) are homed on node. */
typedef struct AggvmDsmHomeRange {
    uint64_t gpa_start;
    uint64_t gpa_end;
    uint16_t node;
} AggvmDsmHomeRange;

typedef struct AggvmDsmOptions {
    uint16_t self;                 /* this node's id, < n_nodes */
    uint16_t n_nodes;              /* 1 .. AGGVM_DSM_MAX_NODES */
    /* "host:port" of each node, indexed by node id; this node listens on its own. */
    const char *const *addresses;
    const uint8_t *secret;         /* cluster secret; at least 16 bytes */
    size_t secret_len;
    const char *cluster_name;      /* bound into authentication; may be NULL */
    /* Home map; pages outside every range are homed on node 0. */
    const AggvmDsmHomeRange *home_ranges;
    size_t n_home_ranges;
    uint64_t resident_cap_bytes;   /* 0: no cap */
    uint32_t timeout_ms;           /* peer answer / connect timeout; 0: 5000 */
    /*
     * UCX_TLS; NULL: "tcp".  With a shared-memory transport (posix, cma...)
     * nodes on one host exchange frames through memory; the connection is
     * still made over TCP.  UCX wakes a sleeping receiver of shared memory
     * through a unix socket of its network namespace, so between namespaces
     * no wake-up arrives: there the service must poll for the node's whole
     * life (service_spin_us longer than any quiet spell).
     */
    const char *ucx_transports;

    /*
     * Called once, on the service thread, when the node can no longer keep
     * memory coherent (a peer died or stopped answering, a protocol
     * violation by an authenticated peer, a stop barrier a peer missed).
     * err is a negative errno; node is the peer to blame, or -1 when no
     * single peer is (a local error, several peers missing).  Faulting
     * threads stay blocked: they are never handed a page whose content is
     * unknown (see aggvm_dsm_poison_lost()).  It runs before any call in
     * flight ends with the failure.
     */
    void (*on_failure)(void *opaque, int err, int node, const char *message);
    /*
     * Called on the service thread after this node's copy of guest pages
     * [gpa, gpa + len) was dropped (another node is to write them, or the
     * resident cap evicted them) and before any peer hears of it: TCG
     * drops the code it translated from them here, so that no vCPU runs
     * it once the writer may write.  It must not block on anything a
     * faulting thread may hold.  (Installing a page needs no call: none
     * was mapped there since the drop that reported it.)
     */
    void (*on_page_change)(void *opaque, uint64_t gpa, uint64_t len);
    /*
     * Called on the service thread as it starts (starting = 1), before
     * any other callback, and as it ends (0), after the last: the
     * embedder registers the thread with its own runtime (QEMU's RCU).
     */
    void (*on_service_thread)(void *opaque, int starting);
    void *opaque;

    /*
     * How frames between nodes are protected once peers have authenticated
     * (every node must use the same; a mismatch fails start with -EBADMSG).
     * AGGVM_DSM_FRAMES_SEALED (0, the default of a zeroed struct): each
     * frame is encrypted and authenticated with AES-256-GCM under keys
     * fresh for each connection, so no one on the wire reads or forges
     * guest memory.  AGGVM_DSM_FRAMES_PLAIN: no protection after the
     * handshake, for a fabric no one else can reach (a trusted RDMA
     * network); saves the encryption's CPU time.
     */
    int frame_protection;

    /*
     * Nodes that join the running cluster later (bit n: node n; never node
     * 0), the same on every node.  They home nothing at start, nobody
     * waits for them, and until each joins it is as a node that left
     * (aggvm_dsm_peer_left() is 1).  On a late node itself,
     * aggvm_dsm_start() joins: it connects to node 0, which admits it with
     * the members and the homes as they are now, then to every member.
     */
    uint64_t late_nodes;

    /*
     * Microseconds the service thread keeps polling after its last event
     * before it sleeps (0, the default: it sleeps at once).  A sleeping
     * thread's wake-up costs tens of microseconds on a busy or virtualised
     * host, once per hop of every fault; polling saves it where a core is
     * free for the service thread, and steals that core from vCPUs where
     * none is (docs/performance.md).
     */
    uint32_t service_spin_us;

    /*
     * With limit_cpu_latency, the node holds the host's CPU wake-up
     * latency at most cpu_latency_us microseconds from aggvm_dsm_start()
     * until it is freed (a PM QoS request through /dev/cpu_dma_latency,
     * for every CPU of the host; 0: idle CPUs poll instead of halting).
     * A thread woken on a halted CPU, such as a memory-service thread at
     * each hop of a remote fault, waits for the CPU to wake: tens of
     * microseconds on a virtualised host.  The cost is idle CPUs kept
     * busy.  aggvm_dsm_start() fails when the request cannot be made
     * (no such device, not permitted).  Off by default: the host's idle
     * states are left alone.
     */
    bool limit_cpu_latency;
    uint32_t cpu_latency_us;

    /*
     * As on_page_change, for copies this node gave up while no node
     * changed the pages (aggvm_dsm_release()): TCG still drops the code
     * it translated from them (the next writer will not tell this node),
     * but a migration need not send them again.  NULL: on_page_change is
     * called for them too.
     */
    void (*on_page_release)(void *opaque, uint64_t gpa, uint64_t len);
} AggvmDsmOptions;

#define AGGVM_DSM_FRAMES_SEALED 0
#define AGGVM_DSM_FRAMES_PLAIN 1

/* Validates the options and creates the node; it does not touch the network yet. */
AggvmDsm *aggvm_dsm_new(const AggvmDsmOptions *opts, char **errmsg);

/*
 * Adds a region before aggvm_dsm_start().  host must be page aligned,
 * anonymous private memory, size a multiple of the page size, and every
 * node must add the same regions.  The region's content is discarded.
 */
int aggvm_dsm_add_region(AggvmDsm *dsm, const char *name, uint64_t gpa,
                         void *host, uint64_t size, char **errmsg);

/*
 * Listens, connects to every peer, authenticates them and checks that they
 * agree on the configuration, then arms userfaultfd on every region.
 * Blocks at most timeout_ms per peer.
 */
int aggvm_dsm_start(AggvmDsm *dsm, char **errmsg);

/*
 * Synchronises with every peer (all nodes must call it), then disarms
 * userfaultfd and stops the service.  After it, region contents are
 * undefined.  Safe to call on a failed node: it then skips the barrier.
 * Calls in flight end at once with -ECANCELED.  A peer that does not reach
 * the barrier within timeout_ms fails it: -ETIMEDOUT naming the node(s),
 * and the node is failed (aggvm_dsm_failed_node()).
 */
int aggvm_dsm_stop(AggvmDsm *dsm, char **errmsg);

/*
 * Stops at once, without a barrier, and releases guest memory: threads
 * blocked on a fault resume on whatever the memory holds.  For a node whose
 * guest has been stopped because the cluster failed; the regions are
 * plain memory afterwards.
 */
int aggvm_dsm_abandon(AggvmDsm *dsm, char **errmsg);

/*
 * For a FAILED node (-EBUSY otherwise), instead of aggvm_dsm_abandon():
 * stops the service without a barrier and marks every page this node does
 * not hold valid (Invalid here: its content is lost or unreachable) as
 * poisoned with UFFDIO_POISON, which wakes the threads blocked on them.
 * Any later access to such a page raises SIGBUS (BUS_MCEERR_AR) in user
 * space, KVM returns -EHWPOISON (and QEMU's vCPU thread gets SIGBUS), and a
 * system call reading it (a disk write from that memory) fails with EFAULT:
 * never zeros.  Pages held Shared here stay mapped and become writable: a
 * thread blocked writing one now, or writing one later, writes this
 * node's copy, which no other node will see (so that no vCPU blocks on it
 * for good and cannot stop).  Pages held
 * Modified here stay as they are.  userfaultfd stays registered until
 * aggvm_dsm_free().  -ENOTSUP when the
 * kernel lacks UFFD_FEATURE_POISON (Linux 6.6+): then fall back to
 * aggvm_dsm_abandon().
 */
int aggvm_dsm_poison_lost(AggvmDsm *dsm, char **errmsg);

/* Stops (without barrier if needed) and frees.  NULL is ignored. */
void aggvm_dsm_free(AggvmDsm *dsm);

/*
 * Waits up to timeout_ms for the node to fail.  Returns 0 if it is still
 * healthy, or the failure's negative errno with its message.
 */
int aggvm_dsm_wait_failure(AggvmDsm *dsm, uint32_t timeout_ms, char **errmsg);

/*
 * The peer blamed for the node's failure (the same node on_failure got), or
 * -1: no failure, or no single peer to blame.
 */
int aggvm_dsm_failed_node(AggvmDsm *dsm);

/*
 * The embedder learnt of a failure before the node did (a peer said it
 * leaves, before its connection drops): the node fails now, as if it had
 * found it, blaming @node (-1: none), with @err (an errno, either sign)
 * and @message; on_failure is called.  Nothing changes on a node that
 * failed already.  Then aggvm_dsm_poison_lost() may follow.
 */
int aggvm_dsm_declare_failure(AggvmDsm *dsm, int err, int node,
                              const char *message);

void aggvm_dsm_free_error(char *errmsg);

/* ---- statistics ------------------------------------------------------- */

#define AGGVM_DSM_LATENCY_BUCKETS 24  /* bucket i: [2^i, 2^(i+1)) microseconds */

typedef struct AggvmDsmFaultStats {
    uint64_t read_faults;          /* resolved read (MISSING) faults */
    uint64_t write_faults;         /* resolved write faults (MISSING or WP) */
    uint64_t local_faults;         /* resolved without the network */
    uint64_t faults_by_home[AGGVM_DSM_MAX_NODES];
    uint64_t latency_us_hist[AGGVM_DSM_LATENCY_BUCKETS];
    uint64_t latency_us_total;
} AggvmDsmFaultStats;

typedef struct AggvmDsmNodeStats {
    AggvmDsmFaultStats faults;
    uint64_t bytes_sent;           /* page payload bytes */
    uint64_t bytes_received;
    uint64_t messages_sent;
    uint64_t messages_received;
    uint64_t messages_rejected;    /* malformed, out of range, unauthenticated */
    uint64_t invalidations_received;
    uint64_t evictions;            /* shared copies dropped for the cap */
    uint64_t writebacks;           /* modified pages written home for the cap */
    uint64_t resident_pages;       /* pages of guest memory held now */
    uint64_t resident_peak_pages;
    uint64_t rehomed_out_pages;    /* pages whose home moved from this node */
    uint64_t rehomed_in_pages;     /* pages whose home moved to this node */
    uint64_t redirects;            /* requests asked again of a page's new home */
    uint64_t exclusive_grants;     /* reads of migratory pages granted Exclusive, as home */
    uint64_t silent_upgrades;      /* writes to Exclusive pages: local, no message */
    uint64_t fetched_pages;        /* asked for by aggvm_dsm_fetch(), not by a fault */
    uint64_t released_pages;       /* given up by aggvm_dsm_release() */
    uint64_t snapshot_pages;       /* snapshots aggvm_dsm_peek() mapped, held now */
    uint64_t peeked_pages;         /* snapshots aggvm_dsm_peek() mapped, in all */
    uint64_t peeks_refused;        /* pages a peek then fetched as usual */
    uint64_t peeks_answered;       /* pages this node answered a peek with */
    uint64_t copied_pages;         /* pages aggvm_dsm_read_ranges() had answered into a buffer */
} AggvmDsmNodeStats;

int aggvm_dsm_node_stats(AggvmDsm *dsm, AggvmDsmNodeStats *out);

/* Another node's figures, as its last heartbeat carried them (a few per
 * timeout).  -ENOENT before the first one or for this node itself. */
typedef struct AggvmDsmPeerStats {
    uint64_t resident_pages;
    uint64_t read_faults;
    uint64_t write_faults;
    uint64_t age_ms;               /* since that heartbeat arrived */
} AggvmDsmPeerStats;

int aggvm_dsm_peer_stats(AggvmDsm *dsm, uint16_t node, AggvmDsmPeerStats *out);

/* Statistics of the faults taken by one thread (Linux tid). -ENOENT if none. */
int aggvm_dsm_thread_stats(AggvmDsm *dsm, int tid, AggvmDsmFaultStats *out);

/* Fills up to max tids of threads that faulted; returns how many exist. */
size_t aggvm_dsm_fault_threads(AggvmDsm *dsm, int *tids, size_t max);

/*
 * Faults are also counted per thread and per granule of guest memory:
 * where a vCPU's memory is, for the scheduler, at a grain that stays small
 * for a guest of terabytes.
 */
#define AGGVM_DSM_FAULT_GRANULE (16ull << 20)

typedef struct AggvmDsmGranuleFaults {
    uint64_t gpa;                  /* the granule's first byte */
    uint64_t faults;               /* resolved faults on it, since the start */
} AggvmDsmGranuleFaults;

/*
 * Fills up to @max granules that thread @tid faulted on, in gpa order;
 * returns how many there are (0 if it never faulted).
 */
size_t aggvm_dsm_thread_granule_faults(AggvmDsm *dsm, int tid,
                                       AggvmDsmGranuleFaults *out, size_t max);

/* ---- moving homes ------------------------------------------------------ */

/*
 * Moves the home of guest pages [gpa, gpa + size) to node @to while every
 * node goes on using them: evacuating a host, a host joining, or moving
 * memory toward the vCPUs that use it.  Every page must be registered and
 * homed on this node (as this node knows it: aggvm_dsm_home_of()).  The
 * directory entries and this node's copies move to @to; faults that cross
 * the move wait or are redirected, never lost, and sequential consistency
 * holds throughout.  Blocks until @to serves the pages.  -EINVAL (bad
 * range or node, a page homed elsewhere), -EBUSY (pages still moving to
 * this node), -ECANCELED (the node stops), or the node's failure; each
 * step of the move is bounded by the node's timeout.  Moves from one node
 * run one at a time; other nodes' moves run meanwhile.
 */
int aggvm_dsm_rehome(AggvmDsm *dsm, uint64_t gpa, uint64_t size, uint16_t to,
                     char **errmsg);

/* The home of the page at @gpa as this node knows it (the node it asks). */
int aggvm_dsm_home_of(AggvmDsm *dsm, uint64_t gpa);

/*
 * The homes as this node knows them: fills up to @max ranges in gpa order
 * and returns how many there are.  Addresses in no range are node 0's.
 */
size_t aggvm_dsm_home_ranges(AggvmDsm *dsm, AggvmDsmHomeRange *out,
                             size_t max);

/* ---- fetching ahead of use ------------------------------------------- */

/*
 * Brings every page of guest range [gpa, gpa + size) to this node,
 * readable (write = 0: a shared copy, no other node loses its own) or
 * writable (write = 1: every other copy is invalidated), and returns once
 * each page has been granted.  The service thread asks for the pages
 * itself, up to a few hundred at a time, and no thread faults or waits
 * on them: for a caller about to read or write a whole range, such as
 * QEMU's migration stream, this costs one message a page each way instead
 * of a fault, its wake-up and a faulting thread each.
 *
 * A page a peer takes away again before the call returns is not asked for
 * twice: whoever touches it later faults as usual.  Under a resident cap,
 * pages fetched early may be evicted before use.  -EINVAL for a range not
 * page aligned or not wholly in registered regions; the node's failure if
 * it fails meanwhile (each request is bounded by the node's timeout);
 * -ECANCELED when it stops.  Callable from any thread but the service's
 * (-EDEADLK there).  A range already held here (the process's page table
 * shows every page mapped, and writable for write = 1) returns at once,
 * without waking the service.
 */
int aggvm_dsm_fetch(AggvmDsm *dsm, uint64_t gpa, uint64_t size, int write,
                    char **errmsg);

/*
 * Maps here a read-only snapshot of every page of guest range [gpa,
 * gpa + size) that this node does not hold, and returns once each page
 * is mapped.  For a reader of a guest that no node writes meanwhile, such
 * as QEMU's migration stream saving a paused guest: the service asks each
 * page's home for a run of pages in one message, and no home changes any
 * state for them, so each page costs a share of one message each way,
 * and dropping the snapshot costs no message at all.
 *
 * The caller promises that no node writes the range until it drops the
 * snapshots with aggvm_dsm_release() (every one of them, before the guest
 * runs again): a page written elsewhere meanwhile leaves its snapshot
 * here stale.  A write on this node is safe: it drops the snapshot and
 * asks for the page as usual.  A page a home cannot answer for at once
 * (a transaction on it runs) is fetched as aggvm_dsm_fetch() would, and
 * given back the same way.  Snapshots are not counted against the
 * resident cap.  *@asked (if not NULL) is set to the number of pages it
 * asked for: 0 when every page was here already, and nothing of the range
 * is then for aggvm_dsm_release() to give back.  Errors as
 * aggvm_dsm_fetch()'s.
 */
int aggvm_dsm_peek(AggvmDsm *dsm, uint64_t gpa, uint64_t size,
                   uint64_t *asked, char **errmsg);

/*
 * Gives up the copies aggvm_dsm_fetch() brought here in guest range
 * [gpa, gpa + size) and that no thread of this node faulted on since, of
 * pages homed on other nodes.  A copy fetched for reading is unmapped and
 * its home told; one fetched for writing (and written since or not,
 * without a fault) is write-protected, copied out and unmapped, and goes
 * home with its data.  A snapshot aggvm_dsm_peek() mapped is unmapped,
 * no one told.  Each run of pages is unmapped in one call
 * (on_page_release, not on_page_change), at most 4096 pages unacked at a
 * time, and the call returns once the last are sent, without waiting for
 * their acks (a page touched meanwhile is asked for again once its ack is
 * in; each eviction is bounded by the node's timeout like a fault).  Other
 * pages of the range, homed here or faulted in, stay.  For a reader or
 * writer that goes through guest RAM once, such as QEMU's migration stream
 * saving or restoring: node 0 need not keep every page of a guest whose
 * RAM is the sum of the hosts'.  Errors as aggvm_dsm_fetch()'s; no fast
 * path.
 */
int aggvm_dsm_release(AggvmDsm *dsm, uint64_t gpa, uint64_t size,
                      char **errmsg);

/* Guest addresses [gpa, gpa + size), page aligned. */
typedef struct AggvmDsmRange {
    uint64_t gpa;
    uint64_t size;
} AggvmDsmRange;

/*
 * aggvm_dsm_fetch(), aggvm_dsm_peek() and aggvm_dsm_release() for @n
 * ranges in one call: every page of every range is asked for before any
 * answer is waited for, so a device model reading or writing a guest
 * buffer made of scattered pages (a virtio request's descriptors) pays
 * one round of messages, not one per piece.  Every range is checked
 * first: one that is not page aligned or not wholly in registered regions
 * (or n = 0) fails the call with -EINVAL and nothing asked for.  Same
 * promises and errors as the one-range calls; *@asked (if not NULL) is
 * set to the number of pages asked for, 0 when every page was here.
 */
int aggvm_dsm_fetch_ranges(AggvmDsm *dsm, const AggvmDsmRange *ranges,
                           size_t n, int write, uint64_t *asked,
                           char **errmsg);
int aggvm_dsm_peek_ranges(AggvmDsm *dsm, const AggvmDsmRange *ranges,
                          size_t n, uint64_t *asked, char **errmsg);
/*
 * Copies guest ranges, one after the other, into @buf (the sum of their
 * sizes), coherent, and keeps nothing here: for a device model reading a
 * guest buffer once, such as a disk write or a packet to send from a
 * vCPU on another node.  A page this node holds is read from guest RAM
 * (it may fault back if taken away meanwhile).  Every other page is asked
 * of its home, or of the owner the home names, in one round of messages
 * for all of them, as aggvm_dsm_peek() asks.  The answer is copied into
 * @buf and mapped nowhere, and no directory changes: the owner keeps its
 * copy and writes on without a fault.  Each page is as it was when its
 * holder answered, so, unlike a peek, this is safe while the guest runs.
 * A page that cannot be answered at once (a transaction on it runs) is
 * fetched as aggvm_dsm_fetch() would, and read from guest RAM.
 * *@asked (if not NULL) is set to the number of pages asked for.
 * -EINVAL for a bad range (every range is checked first) or a buffer size
 * that is not their sum; other errors as aggvm_dsm_fetch()'s.
 */
int aggvm_dsm_read_ranges(AggvmDsm *dsm, const AggvmDsmRange *ranges,
                          size_t n, void *buf, size_t buf_size,
                          uint64_t *asked, char **errmsg);

/*
 * 1 when every page of the @n ranges is mapped here, readable (or
 * writable, for write = 1), as the process's page table shows now; 0 when
 * not; -EINVAL for a bad range.  Asks nothing of anyone: for a caller that
 * reads guest RAM directly when it can (a page may be taken away right
 * after; its reader then faults as usual).
 */
int aggvm_dsm_ranges_here(AggvmDsm *dsm, const AggvmDsmRange *ranges,
                          size_t n, int write, char **errmsg);
int aggvm_dsm_release_ranges(AggvmDsm *dsm, const AggvmDsmRange *ranges,
                             size_t n, char **errmsg);

/* ---- leaving a running cluster (evacuation) --------------------------- */

/*
 * Drops every copy this node holds of pages homed elsewhere (those held
 * Modified are written back to their homes) and waits for the homes'
 * acks.  Nothing may fault them back meanwhile (move this node's vCPUs
 * away first): -ETIMEDOUT when copies keep coming back for the node's
 * timeout.
 */
int aggvm_dsm_drop_copies(AggvmDsm *dsm, char **errmsg);

/*
 * Leaves the running cluster for good, once this node holds nothing: no
 * page homed here (aggvm_dsm_rehome() them away), no copy
 * (aggvm_dsm_drop_copies()), no request in flight; -EBUSY otherwise,
 * with nothing changed.  Says goodbye to every peer, flushes and stops
 * the service; calls in flight on this node end with -ECANCELED.  The
 * regions are plain memory afterwards.  The peers go on: calls to this
 * node fail at once with -ESHUTDOWN, and it is never blamed for a
 * failure.  aggvm_dsm_free() after it.
 */
int aggvm_dsm_leave(AggvmDsm *dsm, char **errmsg);

/*
 * Node 0: holds (hold = 1) or lets go of (0) the admission of late nodes.
 * Homes must not move while a node joins, as it could miss the change:
 * whoever moves homes (aggvm_dsm_rehome()) holds admissions on node 0
 * first.  A late node waits while they are held (up to ten timeouts).
 * Returns 0, or -EBUSY (naming the node) while a node is joining, -EINVAL
 * on any other node.
 */
int aggvm_dsm_hold_admissions(AggvmDsm *dsm, int hold, char **errmsg);

/* 1 when @peer said goodbye (it left, or it is stopping), else 0. */
int aggvm_dsm_peer_left(AggvmDsm *dsm, uint16_t peer);

/* ---- service messages -------------------------------------------------- */

/*
 * Other subsystems (I/O forwarding, interrupts, vCPU hand-off) share the
 * node's authenticated fabric.  A channel is a small integer; payloads are
 * at most AGGVM_DSM_SERVICE_MAX bytes and are delivered in order per
 * (sender, channel).
 */
#define AGGVM_DSM_SERVICE_MAX 65536u

typedef void (*AggvmDsmServiceHandler)(void *opaque, uint16_t from,
                                       const void *data, size_t len);

int aggvm_dsm_register_service(AggvmDsm *dsm, uint16_t channel,
                               AggvmDsmServiceHandler handler, void *opaque,
                               char **errmsg);

int aggvm_dsm_send_service(AggvmDsm *dsm, uint16_t to, uint16_t channel,
                           const void *data, size_t len, char **errmsg);

/* ---- calls ------------------------------------------------------------- */

/*
 * A call is a request answered by one reply: what I/O forwarding needs.
 * Channels are the caller's own numbering (below 0xff00), separate from
 * service channels.  The handler runs on the service thread and must not
 * block: it hands the request on, and whoever serves it later answers with
 * aggvm_dsm_reply(), exactly once per call_id.
 */
typedef void (*AggvmDsmCallHandler)(void *opaque, uint16_t from,
                                    uint64_t call_id, const void *data,
                                    size_t len);
int aggvm_dsm_register_call(AggvmDsm *dsm, uint16_t channel,
                            AggvmDsmCallHandler handler, void *opaque,
                            char **errmsg);

/*
 * Sends a request and blocks until its reply, at most timeout_ms (0: the
 * node's timeout), or until the node stops or fails, the peer leaves or
 * aggvm_dsm_cancel_calls() ends it.  On success returns 0 and
 * stores the reply's length in *reply_len.
 */
int aggvm_dsm_call(AggvmDsm *dsm, uint16_t to, uint16_t channel,
                   const void *request, size_t request_len,
                   void *reply, size_t reply_cap, size_t *reply_len,
                   uint32_t timeout_ms, char **errmsg);

/*
 * Ends every call in flight on this node at once: each aggvm_dsm_call()
 * waiting returns -err (err is a positive errno; 0 means ECANCELED).  Calls
 * made afterwards proceed as usual.  For QEMU's shutdown path.  Calls also
 * end at once, without this, when the node stops (-ECANCELED) or fails
 * (the failure's errno), and a call to a peer that already said goodbye
 * fails with -ESHUTDOWN.
 */
int aggvm_dsm_cancel_calls(AggvmDsm *dsm, int err);

/* Answers a call; status 0 on success or a positive errno for the caller. */
int aggvm_dsm_reply(AggvmDsm *dsm, uint16_t to, uint64_t call_id, int status,
                    const void *data, size_t len, char **errmsg);

/* ---- clocks ------------------------------------------------------------ */

/*
 * A peer's host clock against ours: offset = peer's clock - ours, known to
 * within +/- error.  Every node answers probes on its own; the estimate is
 * the value nearest zero that every probe allows, hence exactly zero for
 * nodes that share one host.
 */
typedef struct AggvmDsmClockOffset {
    int64_t offset;
    int64_t error;
    int64_t best_rtt;           /* shortest probe round trip */
} AggvmDsmClockOffset;

typedef struct AggvmDsmPeerClocks {
    AggvmDsmClockOffset tsc;        /* in the host's TSC ticks */
    AggvmDsmClockOffset monotonic;  /* CLOCK_MONOTONIC, in ns */
} AggvmDsmPeerClocks;

/*
 * Probes the clocks of node @peer @probes times (each within the node's
 * timeout).  Fails with -ERANGE when a clock of the peer does not keep pace
 * with ours while probing (different rates, or a jump).
 */
int aggvm_dsm_measure_clocks(AggvmDsm *dsm, uint16_t peer, unsigned probes,
                             AggvmDsmPeerClocks *out, char **errmsg);

#ifdef __cplusplus
}
#endif

#endif /* AGGVM_DSM_H */
