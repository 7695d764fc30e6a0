// What the C APIs of libaggvm-dsm (dsm.h, migration.h) share: exceptions
// turned into a negative errno and a message for the caller to free with
// aggvm_dsm_free_error().
#pragma once

#include <cerrno>
#include <cstring>
#include <exception>
#include <new>

#include "error.h"

namespace aggvm::dsm {

inline void set_error(char** errmsg, const char* what) {
  if (errmsg) *errmsg = strdup(what);
}

// Runs body; 0, or -errno with *errmsg set when it throws.
template <typename F>
int guarded(char** errmsg, F&& body) {
  try {
    body();
    return 0;
  } catch (const DsmError& e) {
    set_error(errmsg, e.what());
    return -e.err();
  } catch (const std::bad_alloc&) {
    set_error(errmsg, "out of memory");
    return -ENOMEM;
  } catch (const std::exception& e) {
    set_error(errmsg, e.what());
    return -EIO;
  }
}

}  // namespace aggvm::dsm
