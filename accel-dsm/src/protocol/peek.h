// Snapshot reads: pages of a guest that no node writes meanwhile (a paused
// guest being saved), read without the coherence protocol's transaction.
//
// A fetch ahead of use costs three messages a page (request, grant with the
// data, Unblock), a write-protect on the owner, and later an eviction and
// its ack to give the copy back.  Nothing of that is needed when nobody
// writes: the requester asks each page's home for a run of pages in one
// message (Cache::peek), and the home answers for each with its data, the
// word that it was never written, the owner to ask instead, or a refusal
// (a transaction on the page is running: the requester then asks as
// usual).  No directory entry changes, so the requester drops its read-only
// snapshots without telling anyone (Cache::release_fetched).
//
// The promise that nobody writes is the caller's (aggvm_dsm_peek()): a page
// written while a snapshot of it is held leaves that snapshot stale.  A
// write on the requester itself is safe: it drops the snapshot first.
#pragma once

#include "protocol/cache.h"
#include "protocol/context.h"
#include "protocol/directory.h"

namespace aggvm::dsm {

// The run of pages a Peek or PeekResp names, checked: 1 to kMaxPeekRun
// pages, all in the message's region.  Throws Rejected otherwise.
PeekWire peek_run(const Message& m, const PageSpace& space);

// Answers a Peek from m.src with what this node can vouch for: as a page's
// home, its own copy when no other node owns the page (or zero, never
// written), else the owner's name; as a page's owner, its copy.  Anything
// else, or a page with a transaction running, is refused.
void answer_peek(const Message& m, EngineContext& ctx, const Cache& cache, const Directory& directory);

}  // namespace aggvm::dsm
