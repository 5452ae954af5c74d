/*
 * streamkeeper: drives a hiredis redisAsyncContext from a GLib main context.
 *
 * hiredis tells its event loop when it wants to read or write through five hooks; this adapter
 * turns them into one GSource that polls the context's socket and calls
 * redisAsyncHandleRead/Write on readiness. The source belongs to the context: hiredis' cleanup
 * hook (run when the context is freed, by redisAsyncFree or by a connection error) destroys it.
 */
#pragma once

#include <glib.h>
#include <hiredis/async.h>

G_BEGIN_DECLS

/* Attaches @ac to @context (NULL: the thread-default context). Call once, right after
 * redisAsyncConnect and before any command. Fails (FALSE) only if @ac already has an event
 * loop attached. */
gboolean sk_redis_glib_attach (redisAsyncContext *ac, GMainContext *context, int priority);

G_END_DECLS
