/*
 * streamkeeper: GLib event-loop adapter for hiredis' asynchronous API.
 *
 * The socket is watched with g_source_add_unix_fd(): hiredis' add/del hooks only change the
 * condition we poll for, so they are cheap and idempotent as hiredis requires. Readiness is
 * handed back to hiredis from dispatch, writes first (a pending connect completes on the first
 * writable event), then reads. Either call may end the context (EOF, error, or a callback that
 * frees it); hiredis then runs our cleanup hook, which clears @ac so dispatch stops touching it.
 */
#include "failover/sk-redis-glib.h"

typedef struct {
  GSource source;
  redisAsyncContext *ac; /* NULL once hiredis has cleaned up */
  gpointer fd_tag;
  GIOCondition events;
} SkRedisSource;

static void
redis_source_update (SkRedisSource *self, GIOCondition add, GIOCondition remove)
{
  GIOCondition events = (self->events | add) & ~remove;

  if (events == self->events || self->fd_tag == NULL)
    return;
  self->events = events;
  /* Also wakes the context if another thread is polling it. */
  g_source_modify_unix_fd (&self->source, self->fd_tag, events);
}

static void
redis_source_add_read (void *data)
{
  redis_source_update (data, G_IO_IN, 0);
}

static void
redis_source_del_read (void *data)
{
  redis_source_update (data, 0, G_IO_IN);
}

static void
redis_source_add_write (void *data)
{
  redis_source_update (data, G_IO_OUT, 0);
}

static void
redis_source_del_write (void *data)
{
  redis_source_update (data, 0, G_IO_OUT);
}

/* hiredis is freeing the context: forget it and take the source off the loop. This may run
 * from inside our own dispatch; GLib keeps the source alive until dispatch returns. */
static void
redis_source_cleanup (void *data)
{
  SkRedisSource *self = data;

  self->ac = NULL;
  if (self->fd_tag != NULL) {
    g_source_remove_unix_fd (&self->source, self->fd_tag);
    self->fd_tag = NULL;
  }
  g_source_destroy (&self->source);
  g_source_unref (&self->source);
}

static gboolean
redis_source_dispatch (GSource *source, GSourceFunc callback, gpointer user_data)
{
  SkRedisSource *self = (SkRedisSource *)source;
  GIOCondition ready;

  if (self->ac == NULL || self->fd_tag == NULL)
    return G_SOURCE_REMOVE;
  ready = g_source_query_unix_fd (source, self->fd_tag);

  /* Errors and hang-ups go to whichever side hiredis is waiting on, so it notices and tears
   * the connection down instead of the loop spinning on a dead socket. */
  if ((ready & G_IO_OUT) || ((ready & (G_IO_ERR | G_IO_HUP)) && (self->events & G_IO_OUT)))
    redisAsyncHandleWrite (self->ac);
  if (self->ac != NULL
      && ((ready & G_IO_IN) || ((ready & (G_IO_ERR | G_IO_HUP)) && (self->events & G_IO_IN))))
    redisAsyncHandleRead (self->ac);
  return G_SOURCE_CONTINUE;
}

static GSourceFuncs redis_source_funcs = {
  .dispatch = redis_source_dispatch,
};

gboolean
sk_redis_glib_attach (redisAsyncContext *ac, GMainContext *context, int priority)
{
  SkRedisSource *self;

  g_return_val_if_fail (ac != NULL, FALSE);
  if (ac->ev.data != NULL)
    return FALSE;

  self = (SkRedisSource *)g_source_new (&redis_source_funcs, sizeof (SkRedisSource));
  g_source_set_static_name (&self->source, "sk-redis");
  g_source_set_priority (&self->source, priority);
  self->ac = ac;
  self->fd_tag = g_source_add_unix_fd (&self->source, ac->c.fd, 0);

  ac->ev.data = self;
  ac->ev.addRead = redis_source_add_read;
  ac->ev.delRead = redis_source_del_read;
  ac->ev.addWrite = redis_source_add_write;
  ac->ev.delWrite = redis_source_del_write;
  ac->ev.cleanup = redis_source_cleanup;

  /* The context's reference is dropped by the cleanup hook. */
  g_source_attach (&self->source, context != NULL ? context : g_main_context_get_thread_default ());
  return TRUE;
}
