/*
 * For fuzz targets that need GStreamer's type system (GstCaps, GstBuffer): include it in the
 * target's one .c file, and call fuzz_gst_init () before the first input.
 *
 * GLib's quark table is allocated in a library constructor (before main) and, when gst_init
 * outgrows it, replaced without being freed (lock-free readers may still use it): not ours.
 * Full stacks at malloc let the suppression see the constructor frames.
 */
#pragma once

#include <gst/gst.h>
#include <sanitizer/lsan_interface.h>

const char *__lsan_default_suppressions (void);
const char *__asan_default_options (void);

const char *
__lsan_default_suppressions (void)
{
  return "leak:_dl_init\nleak:ld-linux-x86-64.so\n";
}

const char *
__asan_default_options (void)
{
  return "fast_unwind_on_malloc=0";
}

/* What gst_init keeps for the process is not a finding. */
static inline void
fuzz_gst_init (void)
{
  __lsan_disable ();
  gst_init (NULL, NULL);
  __lsan_enable ();
}
