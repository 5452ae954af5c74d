/*
 * streamkeeper: the Redis state store, for a cluster of nodes.
 *
 * Layout (every key under "sk:"):
 *   sk:room:<room>   hash  last_seq, epoch, node, inc        (log head and placement)
 *   sk:log:<room>    list  the newest SK_STORE_REDIS_LOG_CAP event JSONs, oldest first
 *   sk:placed        set   rooms that have a node
 *   sk:ns:<ns>       hash  key → value
 *   sk:inc:<node>    string incarnation counter (only grows)
 *   sk:lease:<node>  string the node's info, with a PX expiry
 *   sk:nodes         set   node ids ever joined
 * Appends PUBLISH the new seq on "sk:ev:<db>:<room>"; watchers listen with one PSUBSCRIBE.
 *
 * Every change touching more than one key is a Lua script, run with EVALSHA (EVAL when the
 * server answers NOSCRIPT), so it is atomic. Changes that matter across a failover (append,
 * claim, release, join, retire) are followed by WAIT 1 while the master has a replica.
 *
 * Connections: "command" (all calls, pipelined), "pubsub" (watch notifications), and with
 * sentinel:// a short "query" connection asking a sentinel for the master plus a "watch"
 * connection subscribed to +switch-master. While the command connection is down new calls
 * fail with SK_ERROR_UNAVAILABLE at once; calls made while it (re)connects wait for that
 * attempt (bounded by SK_REDIS_CONNECT_TIMEOUT_MS), and calls in flight when it drops fail.
 *
 * Re-entrancy: user callbacks only run as the last step of a reply callback (completion) or
 * from idles (deferred failures, watch notifications), never while our own state is half
 * updated, so a callback may make new calls or free the store.
 */
#include "failover/sk-store.h"
#include "failover/sk-store-backend.h"
#include "failover/sk-redis-glib.h"
#include "failover/sk-store-watches.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "common/sk-common.h"

#define SK_STORE_REDIS_LOG_CAP 10000
#define SK_REDIS_MAX_CALLS 65536 /* in flight + waiting for a connection */
#define SK_REDIS_CONNECT_TIMEOUT_MS 1000
#define SK_REDIS_REPLY_TIMEOUT_MS 2000
#define SK_REDIS_WAIT_TIMEOUT_MS 250
#define SK_REDIS_ROLE_PERIOD_MS 1000
#define SK_REDIS_TICK_MS 250
#define SK_REDIS_BACKOFF_MIN_MS 50
#define SK_REDIS_BACKOFF_MAX_MS 1000

/* ---- scripts ------------------------------------------------------------------------------ */

typedef enum {
  SCRIPT_APPEND,
  SCRIPT_READ,
  SCRIPT_CLAIM,
  SCRIPT_RELEASE,
  SCRIPT_PLACEMENTS,
  SCRIPT_JOIN,
  SCRIPT_RENEW,
  SCRIPT_RETIRE,
  SCRIPT_NODES,
  N_SCRIPTS,
} RedisScriptId;

/* Numbers cross as decimal strings; Lua compares them as doubles, exact below 2^53. Errors
 * start with the SkError they map to (see redis_error_from_reply). */
static const char *const redis_scripts[N_SCRIPTS] = {
  /* KEYS room, log; ARGV epoch, seq, json, cap, channel */
  [SCRIPT_APPEND] = "local m = redis.call('HMGET', KEYS[1], 'epoch', 'last_seq')\n"
                    "local epoch, last = tonumber(m[1]) or 0, tonumber(m[2]) or 0\n"
                    "if tonumber(ARGV[1]) < epoch then\n"
                    "  return redis.error_reply('STALE_EPOCH epoch ' .. ARGV[1] ..\n"
                    "    ' is older than ' .. m[1])\n"
                    "end\n"
                    "if tonumber(ARGV[2]) ~= last + 1 then\n"
                    "  return redis.error_reply('CONFLICT seq ' .. ARGV[2] ..\n"
                    "    ', expected ' .. string.format('%d', last + 1))\n"
                    "end\n"
                    "redis.call('HSET', KEYS[1], 'last_seq', ARGV[2])\n"
                    "redis.call('RPUSH', KEYS[2], ARGV[3])\n"
                    "redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)\n"
                    "redis.call('PUBLISH', ARGV[5], ARGV[2])\n"
                    "return 1\n",
  /* KEYS room, log; ARGV after_seq, limit → {seq of the first event, events} */
  [SCRIPT_READ]
  = "local last = tonumber(redis.call('HGET', KEYS[1], 'last_seq')) or 0\n"
    "local after, len = tonumber(ARGV[1]), redis.call('LLEN', KEYS[2])\n"
    "if after >= last or len == 0 then return {0, {}} end\n"
    "local first = last - len + 1\n"
    "local start = 0\n"
    "if after >= first then start = after - first + 1 end\n"
    "local stop = math.min(start + tonumber(ARGV[2]), len) - 1\n"
    "if stop < start then return {0, {}} end\n"
    "-- negative indexes walk from the tail, where readers usually are\n"
    "return {first + start, redis.call('LRANGE', KEYS[2], start - len, stop - len)}\n",
  /* KEYS room, placed; ARGV expected_epoch, node, incarnation, room → new epoch */
  [SCRIPT_CLAIM] = "local epoch = tonumber(redis.call('HGET', KEYS[1], 'epoch')) or 0\n"
                   "if epoch ~= tonumber(ARGV[1]) then\n"
                   "  return redis.error_reply('CONFLICT epoch is ' ..\n"
                   "    string.format('%d', epoch) .. ', not ' .. ARGV[1])\n"
                   "end\n"
                   "local new = redis.call('HINCRBY', KEYS[1], 'epoch', 1)\n"
                   "redis.call('HSET', KEYS[1], 'node', ARGV[2], 'inc', ARGV[3])\n"
                   "redis.call('SADD', KEYS[2], ARGV[4])\n"
                   "return new\n",
  /* KEYS room, placed; ARGV epoch, room */
  [SCRIPT_RELEASE] = "local epoch = tonumber(redis.call('HGET', KEYS[1], 'epoch')) or 0\n"
                     "if redis.call('EXISTS', KEYS[1]) == 0 or epoch ~= tonumber(ARGV[1]) then\n"
                     "  return redis.error_reply('CONFLICT epoch is ' ..\n"
                     "    string.format('%d', epoch) .. ', not ' .. ARGV[1])\n"
                     "end\n"
                     "redis.call('HDEL', KEYS[1], 'node', 'inc')\n"
                     "redis.call('SREM', KEYS[2], ARGV[2])\n"
                     "return 1\n",
  /* KEYS placed; ARGV room key prefix → {room, node, inc, epoch, …} */
  [SCRIPT_PLACEMENTS] = "local out = {}\n"
                        "for _, room in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
                        "  local p = redis.call('HMGET', ARGV[1] .. room, 'node', 'inc', 'epoch')\n"
                        "  if p[1] then\n"
                        "    out[#out + 1] = room\n"
                        "    out[#out + 1] = p[1]\n"
                        "    out[#out + 1] = p[2] or '0'\n"
                        "    out[#out + 1] = p[3] or '0'\n"
                        "  end\n"
                        "end\n"
                        "return out\n",
  /* KEYS inc, lease, nodes; ARGV info, ttl_ms, node → new incarnation */
  [SCRIPT_JOIN] = "local inc = redis.call('INCR', KEYS[1])\n"
                  "redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])\n"
                  "redis.call('SADD', KEYS[3], ARGV[3])\n"
                  "return inc\n",
  /* KEYS inc, lease; ARGV incarnation, info, ttl_ms */
  [SCRIPT_RENEW] = "if redis.call('GET', KEYS[1]) ~= ARGV[1] then\n"
                   "  return redis.error_reply('STALE_EPOCH incarnation ' .. ARGV[1] ..\n"
                   "    ' was retired')\n"
                   "end\n"
                   "redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])\n"
                   "return 1\n",
  /* KEYS inc, lease; ARGV incarnation, force ("1"/"0") */
  [SCRIPT_RETIRE] = "local cur, inc = tonumber(redis.call('GET', KEYS[1])), tonumber(ARGV[1])\n"
                    "if cur == nil or cur > inc then return 1 end\n"
                    "if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then\n"
                    "  return redis.error_reply('CONFLICT incarnation ' .. ARGV[1] ..\n"
                    "    ' still holds its lease')\n"
                    "end\n"
                    "redis.call('SET', KEYS[1], string.format('%d', math.max(cur, inc) + 1))\n"
                    "redis.call('DEL', KEYS[2])\n"
                    "return 1\n",
  /* KEYS nodes; ARGV inc prefix, lease prefix → {node, inc, info, …} for live leases */
  [SCRIPT_NODES] = "local out = {}\n"
                   "for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do\n"
                   "  local info = redis.call('GET', ARGV[2] .. id)\n"
                   "  if info then\n"
                   "    out[#out + 1] = id\n"
                   "    out[#out + 1] = redis.call('GET', ARGV[1] .. id) or '0'\n"
                   "    out[#out + 1] = info\n"
                   "  end\n"
                   "end\n"
                   "return out\n",
};

/* ---- types -------------------------------------------------------------------------------- */

typedef struct _SkStoreRedis SkStoreRedis;
typedef struct _RedisOp RedisOp;

typedef enum {
  LINK_COMMAND,
  LINK_PUBSUB,
  LINK_QUERY, /* asks a sentinel where the master is */
  LINK_WATCH, /* subscribed to a sentinel's +switch-master */
} RedisLinkKind;

/* One connection and its reconnect state. */
typedef struct {
  SkStoreRedis *self;
  RedisLinkKind kind;
  const char *name;
  redisAsyncContext *ac; /* NULL while down */
  gboolean ready;        /* handshake done */
  char *host;            /* where ac points, or pointed last */
  int port;
  gint64 connect_us; /* start of the current attempt */
  GQueue inflight;   /* RedisOp, in send order (replies come back in that order) */
  guint backoff_ms;
  GSource *retry_source;
} RedisLink;

struct _SkStoreRedis {
  SkStore parent;
  GMainContext *context;
  gboolean closing;

  /* redis://: the server; sentinel://: the sentinels and the master's name */
  char *host;
  int port;
  int db;
  GPtrArray *sentinel_hosts;
  GArray *sentinel_ports;
  char *master_name;
  guint query_index;
  guint watch_index;

  char *sha[N_SCRIPTS];
  char *channel_prefix; /* "sk:ev:<db>:" */
  char *pattern;        /* channel_prefix + "*" */

  RedisLink cmd, sub, query, watch;
  gboolean cmd_connecting; /* an attempt (sentinel query or connect) is under way */
  GQueue pending;          /* RedisOp waiting for the command connection */
  guint replicas;          /* connected replicas of the master, as of the last ROLE */
  gboolean role_pending;
  gint64 role_us;
  char *master_host; /* the master last used, for switch logs */
  int master_port;
  gint64 down_since_us; /* 0 while up */

  GSource *tick_source;

  SkStoreWatches *watches;
};

typedef gboolean (*RedisParseFunc) (RedisOp *op, const redisReply *reply, GError **error);
typedef void (*RedisInternalFunc) (RedisOp *op, const redisReply *reply);

typedef enum { RESULT_BOOL, RESULT_U64, RESULT_POINTER } RedisResultKind;

struct _RedisOp {
  RedisLink *link; /* set while in link->inflight; NULL once detached (reply is dropped) */
  GList node;
  GTask *task; /* NULL for our own commands */
  char *what;  /* "room r", for messages */
  int script;  /* RedisScriptId, or -1 for a plain command */
  GPtrArray *args;
  gboolean durable;    /* WAIT for a replica before completing */
  gboolean tried_eval; /* NOSCRIPT seen once */
  gboolean waiting;    /* the WAIT is in flight */
  gint64 sent_us;
  RedisParseFunc parse;
  RedisInternalFunc internal;

  RedisResultKind kind;
  guint64 u64;
  gpointer ptr;
  GDestroyNotify ptr_free;
};

static void link_connect (RedisLink *link, const char *host, int port);
static void link_lost (RedisLink *link, gboolean free_ac, const char *why);
static void cmd_start (SkStoreRedis *self);
static void sub_start (SkStoreRedis *self);
static void watch_start (SkStoreRedis *self);
static void query_next (SkStoreRedis *self);

/* ---- operations --------------------------------------------------------------------------- */

static RedisOp *
op_new (GTask *task, const char *what)
{
  RedisOp *op = g_new0 (RedisOp, 1);

  op->node.data = op;
  op->task = task;
  op->what = g_strdup (what);
  op->script = -1;
  op->args = g_ptr_array_new_with_free_func (g_free);
  op->kind = RESULT_BOOL;
  return op;
}

static void
op_free (RedisOp *op)
{
  if (op->ptr != NULL && op->ptr_free != NULL)
    op->ptr_free (op->ptr);
  g_ptr_array_unref (op->args);
  g_free (op->what);
  g_clear_object (&op->task);
  g_free (op);
}

static void
op_add (RedisOp *op, const char *arg)
{
  g_ptr_array_add (op->args, g_strdup (arg));
}

G_GNUC_PRINTF (2, 3)
static void
op_addf (RedisOp *op, const char *format, ...)
{
  va_list args;

  va_start (args, format);
  g_ptr_array_add (op->args, g_strdup_vprintf (format, args));
  va_end (args);
}

static RedisOp *
op_new_script (GTask *task, const char *what, RedisScriptId script, guint n_keys)
{
  RedisOp *op = op_new (task, what);

  op->script = script;
  op_addf (op, "%u", n_keys);
  return op;
}

/* Tasks failed from an idle: teardown paths run inside hiredis or inside sk_store_free, where
 * a caller's callback must not run. The idle owns the tasks, not the store. */
typedef struct {
  GPtrArray *tasks;
  GError *error;
} RedisFailure;

static void
redis_failure_free (gpointer data)
{
  RedisFailure *failure = data;

  g_ptr_array_unref (failure->tasks);
  g_error_free (failure->error);
  g_free (failure);
}

static gboolean
redis_failure_cb (gpointer data)
{
  RedisFailure *failure = data;

  for (guint i = 0; i < failure->tasks->len; i++)
    g_task_return_error (g_ptr_array_index (failure->tasks, i), g_error_copy (failure->error));
  return G_SOURCE_REMOVE;
}

static void
redis_fail_later (GMainContext *context, GPtrArray *tasks, GError *error)
{
  RedisFailure *failure;
  g_autoptr (GSource) source = NULL;

  if (tasks->len == 0) {
    g_ptr_array_unref (tasks);
    g_error_free (error);
    return;
  }
  failure = g_new0 (RedisFailure, 1);
  failure->tasks = tasks;
  failure->error = error;
  source = g_idle_source_new ();
  g_source_set_priority (source, G_PRIORITY_DEFAULT);
  g_source_set_callback (source, redis_failure_cb, failure, redis_failure_free);
  g_source_set_static_name (source, "sk-store-redis-fail");
  g_source_attach (source, context);
}

static void
op_fail_later (SkStoreRedis *self, RedisOp *op, GError *error)
{
  GPtrArray *tasks = g_ptr_array_new_with_free_func (g_object_unref);

  if (op->task != NULL)
    g_ptr_array_add (tasks, g_steal_pointer (&op->task));
  redis_fail_later (self->context, tasks, error);
  op_free (op);
}

/* Completes @op's task. Must be the last thing a reply callback does: the caller's callback
 * may run from here and may free the store. */
static void
op_complete (RedisOp *op, GError *error)
{
  GTask *task = g_steal_pointer (&op->task);

  if (task == NULL) {
    g_clear_error (&error);
  } else if (error != NULL) {
    g_task_return_error (task, error);
  } else {
    switch (op->kind) {
      case RESULT_BOOL:
        g_task_return_boolean (task, TRUE);
        break;
      case RESULT_U64:
        sk_store_task_return_u64 (task, op->u64);
        break;
      case RESULT_POINTER:
        g_task_return_pointer (task, g_steal_pointer (&op->ptr), op->ptr_free);
        break;
    }
  }
  op_free (op);
  g_clear_object (&task);
}

/* Fails every call in flight on @link (their replies, if hiredis still delivers them, are
 * dropped) and returns them to the caller from an idle. */
static void
link_detach_inflight (RedisLink *link, const char *why)
{
  GPtrArray *tasks = g_ptr_array_new_with_free_func (g_object_unref);
  GList *l;

  while ((l = g_queue_pop_head_link (&link->inflight)) != NULL) {
    RedisOp *op = l->data;

    op->link = NULL;
    if (op->task != NULL)
      g_ptr_array_add (tasks, g_steal_pointer (&op->task));
  }
  redis_fail_later (link->self->context, tasks,
                    g_error_new (SK_ERROR, SK_ERROR_UNAVAILABLE, "state store: %s", why));
}

static void
redis_fail_pending (SkStoreRedis *self, const char *why)
{
  GPtrArray *tasks = g_ptr_array_new_with_free_func (g_object_unref);
  RedisOp *op;

  while ((op = g_queue_pop_head (&self->pending)) != NULL) {
    if (op->task != NULL)
      g_ptr_array_add (tasks, g_steal_pointer (&op->task));
    op_free (op);
  }
  redis_fail_later (self->context, tasks,
                    g_error_new (SK_ERROR, SK_ERROR_UNAVAILABLE, "state store: %s", why));
}

/* Server errors: our scripts' own (STALE_EPOCH, CONFLICT), and a server that cannot take
 * writes right now (READONLY after a failover, LOADING, MASTERDOWN, …) → UNAVAILABLE. */
static GError *
redis_error_from_reply (RedisOp *op, const char *message)
{
  static const struct {
    const char *prefix;
    SkError code;
  } map[] = {
    { "STALE_EPOCH ", SK_ERROR_STALE_EPOCH }, { "CONFLICT ", SK_ERROR_CONFLICT },
    { "READONLY", SK_ERROR_UNAVAILABLE },     { "LOADING", SK_ERROR_UNAVAILABLE },
    { "MASTERDOWN", SK_ERROR_UNAVAILABLE },   { "BUSY", SK_ERROR_UNAVAILABLE },
    { "TRYAGAIN", SK_ERROR_UNAVAILABLE },     { "OOM", SK_ERROR_UNAVAILABLE },
  };

  for (guint i = 0; i < G_N_ELEMENTS (map); i++) {
    if (g_str_has_prefix (message, map[i].prefix)) {
      const char *rest = message + strlen (map[i].prefix);

      if (map[i].code == SK_ERROR_UNAVAILABLE)
        rest = message;
      return g_error_new (SK_ERROR, map[i].code, "%s: %s", op->what, rest);
    }
  }
  return g_error_new (SK_ERROR, SK_ERROR_INTERNAL, "%s: Redis: %s", op->what, message);
}

static void op_reply_cb (redisAsyncContext *ac, void *reply, void *privdata);

/* Sends @op on @link, which must be connected; on failure the op fails from an idle. */
static void
op_send (RedisLink *link, RedisOp *op)
{
  SkStoreRedis *self = link->self;
  guint argc = op->args->len + (op->script >= 0 ? 2 : 0);
  g_autofree const char **argv = g_new (const char *, argc);
  g_autofree size_t *lens = g_new (size_t, argc);
  guint n = 0;

  if (op->script >= 0) {
    argv[n++] = op->tried_eval ? "EVAL" : "EVALSHA";
    argv[n++] = op->tried_eval ? redis_scripts[op->script] : self->sha[op->script];
  }
  for (guint i = 0; i < op->args->len; i++)
    argv[n++] = g_ptr_array_index (op->args, i);
  for (guint i = 0; i < argc; i++)
    lens[i] = strlen (argv[i]);

  if (link->ac == NULL
      || redisAsyncCommandArgv (link->ac, op_reply_cb, op, (int)argc, argv, lens) != REDIS_OK) {
    op_fail_later (
        self, op,
        g_error_new (SK_ERROR, SK_ERROR_UNAVAILABLE, "%s: state store: not connected", op->what));
    return;
  }
  op->link = link;
  op->sent_us = g_get_monotonic_time ();
  g_queue_push_tail_link (&link->inflight, &op->node);
}

static void
op_send_wait (RedisLink *link, RedisOp *op)
{
  g_autofree char *timeout = g_strdup_printf ("%u", SK_REDIS_WAIT_TIMEOUT_MS);
  const char *argv[] = { "WAIT", "1", timeout };
  size_t lens[] = { 4, 1, strlen (timeout) };

  if (redisAsyncCommandArgv (link->ac, op_reply_cb, op, 3, argv, lens) != REDIS_OK) {
    op_fail_later (
        link->self, op,
        g_error_new (SK_ERROR, SK_ERROR_UNAVAILABLE, "%s: state store: not connected", op->what));
    return;
  }
  op->waiting = TRUE;
  op->link = link;
  op->sent_us = g_get_monotonic_time ();
  g_queue_push_tail_link (&link->inflight, &op->node);
}

static void
op_reply_cb (redisAsyncContext *ac, void *r, void *privdata)
{
  RedisOp *op = privdata;
  RedisLink *link = op->link;
  const redisReply *reply = r;
  GError *error = NULL;

  if (link == NULL) {
    /* Detached when its connection was given up; the caller has been answered. */
    op_free (op);
    return;
  }
  g_queue_unlink (&link->inflight, &op->node);
  op->link = NULL;

  if (reply == NULL) {
    /* hiredis is tearing the connection down (error or EOF). */
    link_lost (link, FALSE, ac->errstr[0] != '\0' ? ac->errstr : "connection lost");
    op_fail_later (link->self, op,
                   g_error_new (SK_ERROR, SK_ERROR_UNAVAILABLE, "%s: state store: %s", op->what,
                                "connection to Redis lost"));
    return;
  }

  if (op->internal != NULL) {
    op->link = link;
    op->internal (op, reply);
    op_free (op);
    return;
  }

  if (op->waiting) {
    /* Best effort: a replica that did not acknowledge in time is logged, not an error. */
    if (reply->type != REDIS_REPLY_INTEGER || reply->integer < 1)
      g_debug ("%s: WAIT: no replica acknowledged within %u ms", op->what,
               SK_REDIS_WAIT_TIMEOUT_MS);
    op_complete (op, NULL);
    return;
  }

  if (reply->type == REDIS_REPLY_ERROR) {
    if (op->script >= 0 && !op->tried_eval && g_str_has_prefix (reply->str, "NOSCRIPT")) {
      op->tried_eval = TRUE;
      op_send (link, op);
      return;
    }
    error = redis_error_from_reply (op, reply->str);
    if (g_str_has_prefix (reply->str, "READONLY"))
      link_lost (link, TRUE, "the server is a replica now");
    op_complete (op, error);
    return;
  }

  if (op->parse != NULL && !op->parse (op, reply, &error)) {
    op_complete (op, error);
    return;
  }
  if (op->durable && link->self->replicas > 0) {
    op_send_wait (link, op);
    return;
  }
  op_complete (op, NULL);
}

/* A call from the API: sent now, queued behind a connection attempt, or refused. */
static void
redis_submit (SkStoreRedis *self, RedisOp *op)
{
  guint n_calls = self->pending.length + self->cmd.inflight.length;

  if (self->cmd.ready && n_calls < SK_REDIS_MAX_CALLS) {
    op_send (&self->cmd, op);
  } else if (self->cmd_connecting && n_calls < SK_REDIS_MAX_CALLS) {
    g_queue_push_tail (&self->pending, op);
  } else {
    /* The task was made by this very call, so GTask defers the callback to an idle. */
    g_task_return_new_error (
        op->task, SK_ERROR, SK_ERROR_UNAVAILABLE, "%s: state store: %s", op->what,
        n_calls >= SK_REDIS_MAX_CALLS ? "too many calls in flight" : "Redis is unreachable");
    op_free (op);
  }
}

/* ---- reply parsing (never trust a reply's shape) ------------------------------------------ */

static gboolean
redis_bad_reply (RedisOp *op, GError **error)
{
  g_set_error (error, SK_ERROR, SK_ERROR_INTERNAL, "%s: unexpected reply from Redis", op->what);
  return FALSE;
}

static gboolean
reply_is_string (const redisReply *r)
{
  return r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS);
}

static gboolean
reply_to_u64 (const redisReply *r, guint64 *out)
{
  if (r != NULL && r->type == REDIS_REPLY_INTEGER && r->integer >= 0) {
    *out = (guint64)r->integer;
    return TRUE;
  }
  if (r != NULL && r->type == REDIS_REPLY_NIL) {
    *out = 0;
    return TRUE;
  }
  return reply_is_string (r) && g_ascii_string_to_unsigned (r->str, 10, 0, G_MAXUINT64, out, NULL);
}

static gboolean
parse_any (RedisOp *op, const redisReply *reply, GError **error)
{
  return TRUE;
}

static gboolean
parse_u64 (RedisOp *op, const redisReply *reply, GError **error)
{
  op->kind = RESULT_U64;
  return reply_to_u64 (reply, &op->u64) || redis_bad_reply (op, error);
}

static gboolean
parse_get (RedisOp *op, const redisReply *reply, GError **error)
{
  if (reply->type == REDIS_REPLY_NIL) {
    g_set_error (error, SK_ERROR, SK_ERROR_NOT_FOUND, "%s: not found", op->what);
    return FALSE;
  }
  if (reply->type != REDIS_REPLY_STRING)
    return redis_bad_reply (op, error);
  op->kind = RESULT_POINTER;
  op->ptr = g_strndup (reply->str, reply->len);
  op->ptr_free = g_free;
  return TRUE;
}

/* An array of @stride-tuples of strings. */
static gboolean
reply_is_tuples (const redisReply *reply, guint stride)
{
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements % stride != 0)
    return FALSE;
  for (size_t i = 0; i < reply->elements; i++)
    if (reply->element[i]->type != REDIS_REPLY_STRING)
      return FALSE;
  return TRUE;
}

/* g_ptr_array_sort() hands us pointers to the array's elements, each a tuple's start. */
static int
compare_first_string (gconstpointer a, gconstpointer b)
{
  const redisReply *x = **(redisReply * *const *)a;
  const redisReply *y = **(redisReply * *const *)b;

  return strcmp (x->str, y->str);
}

/* Sorts @reply's @stride-tuples by their first string (the tuple's name); returns pointers to
 * each tuple's first element. */
static GPtrArray *
reply_sorted_tuples (const redisReply *reply, guint stride)
{
  GPtrArray *tuples = g_ptr_array_sized_new (reply->elements / stride);

  for (size_t i = 0; i < reply->elements; i += stride)
    g_ptr_array_add (tuples, &reply->element[i]);
  g_ptr_array_sort (tuples, compare_first_string);
  return tuples;
}

static gboolean
parse_list (RedisOp *op, const redisReply *reply, GError **error)
{
  g_autoptr (GPtrArray) tuples = NULL;
  GPtrArray *values;

  if (!reply_is_tuples (reply, 2))
    return redis_bad_reply (op, error);
  tuples = reply_sorted_tuples (reply, 2);
  values = g_ptr_array_new_full (tuples->len, g_free);
  for (guint i = 0; i < tuples->len; i++) {
    redisReply **t = g_ptr_array_index (tuples, i);

    g_ptr_array_add (values, g_strndup (t[1]->str, t[1]->len));
  }
  op->kind = RESULT_POINTER;
  op->ptr = values;
  op->ptr_free = (GDestroyNotify)g_ptr_array_unref;
  return TRUE;
}

static gboolean
parse_read (RedisOp *op, const redisReply *reply, GError **error)
{
  const redisReply *events;
  guint64 first_seq;
  GPtrArray *out;

  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2
      || !reply_to_u64 (reply->element[0], &first_seq)
      || reply->element[1]->type != REDIS_REPLY_ARRAY)
    return redis_bad_reply (op, error);
  events = reply->element[1];
  for (size_t i = 0; i < events->elements; i++)
    if (events->element[i]->type != REDIS_REPLY_STRING)
      return redis_bad_reply (op, error);

  out = g_ptr_array_new_full (events->elements, (GDestroyNotify)sk_store_event_free);
  for (size_t i = 0; i < events->elements; i++) {
    SkStoreEvent *event = g_new0 (SkStoreEvent, 1);

    event->seq = first_seq + i;
    event->json = g_strndup (events->element[i]->str, events->element[i]->len);
    g_ptr_array_add (out, event);
  }
  op->kind = RESULT_POINTER;
  op->ptr = out;
  op->ptr_free = (GDestroyNotify)g_ptr_array_unref;
  return TRUE;
}

static gboolean
parse_placement (RedisOp *op, const redisReply *reply, GError **error)
{
  const redisReply *node, *epoch_reply, *inc_reply;
  guint64 epoch, incarnation = 0;

  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3)
    return redis_bad_reply (op, error);
  node = reply->element[0];
  epoch_reply = reply->element[1];
  inc_reply = reply->element[2];
  if ((node->type != REDIS_REPLY_NIL && node->type != REDIS_REPLY_STRING)
      || !reply_to_u64 (epoch_reply, &epoch)
      || (inc_reply->type != REDIS_REPLY_NIL && !reply_to_u64 (inc_reply, &incarnation)))
    return redis_bad_reply (op, error);
  op->kind = RESULT_POINTER;
  op->ptr = sk_store_placement_new (NULL, node->type == REDIS_REPLY_STRING ? node->str : NULL,
                                    node->type == REDIS_REPLY_STRING ? incarnation : 0, epoch);
  op->ptr_free = (GDestroyNotify)sk_store_placement_free;
  return TRUE;
}

static gboolean
parse_placements (RedisOp *op, const redisReply *reply, GError **error)
{
  g_autoptr (GPtrArray) tuples = NULL;
  g_autoptr (GPtrArray) out = NULL;

  if (!reply_is_tuples (reply, 4))
    return redis_bad_reply (op, error);
  tuples = reply_sorted_tuples (reply, 4);
  out = g_ptr_array_new_full (tuples->len, (GDestroyNotify)sk_store_placement_free);
  for (guint i = 0; i < tuples->len; i++) {
    redisReply **t = g_ptr_array_index (tuples, i);
    guint64 incarnation, epoch;

    if (!reply_to_u64 (t[2], &incarnation) || !reply_to_u64 (t[3], &epoch))
      return redis_bad_reply (op, error);
    g_ptr_array_add (out, sk_store_placement_new (t[0]->str, t[1]->str, incarnation, epoch));
  }
  op->kind = RESULT_POINTER;
  op->ptr = g_steal_pointer (&out);
  op->ptr_free = (GDestroyNotify)g_ptr_array_unref;
  return TRUE;
}

static gboolean
parse_nodes (RedisOp *op, const redisReply *reply, GError **error)
{
  g_autoptr (GPtrArray) tuples = NULL;
  g_autoptr (GPtrArray) out = NULL;

  if (!reply_is_tuples (reply, 3))
    return redis_bad_reply (op, error);
  tuples = reply_sorted_tuples (reply, 3);
  out = g_ptr_array_new_full (tuples->len, (GDestroyNotify)sk_store_node_free);
  for (guint i = 0; i < tuples->len; i++) {
    redisReply **t = g_ptr_array_index (tuples, i);
    guint64 incarnation;

    if (!reply_to_u64 (t[1], &incarnation))
      return redis_bad_reply (op, error);
    g_ptr_array_add (out, sk_store_node_new (t[0]->str, incarnation, t[2]->str));
  }
  op->kind = RESULT_POINTER;
  op->ptr = g_steal_pointer (&out);
  op->ptr_free = (GDestroyNotify)g_ptr_array_unref;
  return TRUE;
}

/* ---- watches ------------------------------------------------------------------------------ */

static guint
redis_watch_events (SkStore *store, const char *room, SkStoreWatchFunc func, gpointer user_data,
                    GDestroyNotify destroy)
{
  return sk_store_watches_add (((SkStoreRedis *)store)->watches, room, func, user_data, destroy);
}

static void
redis_unwatch_events (SkStore *store, guint watch_id)
{
  sk_store_watches_remove (((SkStoreRedis *)store)->watches, watch_id);
}

/* ---- keys --------------------------------------------------------------------------------- */

#define PLACED_KEY "sk:placed"
#define NODES_KEY "sk:nodes"
#define INC_PREFIX "sk:inc:"
#define LEASE_PREFIX "sk:lease:"

/* ---- the store API ------------------------------------------------------------------------ */

static RedisOp *
room_op (GTask *task, const char *room, RedisScriptId script)
{
  g_autofree char *what = g_strdup_printf ("room %s", room);
  RedisOp *op = op_new_script (task, what, script, 2);

  op_addf (op, "sk:room:%s", room);
  op_addf (op, "sk:log:%s", room);
  return op;
}

static void
redis_append_event (SkStore *store, const char *room, guint64 epoch, guint64 seq, const char *json,
                    GTask *task)
{
  SkStoreRedis *self = (SkStoreRedis *)store;
  RedisOp *op = room_op (task, room, SCRIPT_APPEND);

  op_addf (op, "%" G_GUINT64_FORMAT, epoch);
  op_addf (op, "%" G_GUINT64_FORMAT, seq);
  op_add (op, json);
  op_addf (op, "%u", SK_STORE_REDIS_LOG_CAP);
  op_addf (op, "%s%s", self->channel_prefix, room);
  op->parse = parse_any;
  op->durable = TRUE;
  redis_submit (self, op);
}

static void
redis_read_events (SkStore *store, const char *room, guint64 after_seq, guint limit, GTask *task)
{
  RedisOp *op = room_op (task, room, SCRIPT_READ);

  op_addf (op, "%" G_GUINT64_FORMAT, after_seq);
  op_addf (op, "%u", limit);
  op->parse = parse_read;
  redis_submit ((SkStoreRedis *)store, op);
}

static void
redis_last_seq (SkStore *store, const char *room, GTask *task)
{
  g_autofree char *what = g_strdup_printf ("room %s", room);
  RedisOp *op = op_new (task, what);

  op_add (op, "HGET");
  op_addf (op, "sk:room:%s", room);
  op_add (op, "last_seq");
  op->parse = parse_u64;
  redis_submit ((SkStoreRedis *)store, op);
}

static RedisOp *
ns_op (GTask *task, const char *command, const char *ns, const char *key)
{
  g_autofree char *what = key != NULL ? g_strdup_printf ("%s/%s", ns, key) : g_strdup (ns);
  RedisOp *op = op_new (task, what);

  op_add (op, command);
  op_addf (op, "sk:ns:%s", ns);
  if (key != NULL)
    op_add (op, key);
  return op;
}

static void
redis_put (SkStore *store, const char *ns, const char *key, const char *value, GTask *task)
{
  RedisOp *op = ns_op (task, "HSET", ns, key);

  op_add (op, value);
  op->parse = parse_any;
  redis_submit ((SkStoreRedis *)store, op);
}

static void
redis_get (SkStore *store, const char *ns, const char *key, GTask *task)
{
  RedisOp *op = ns_op (task, "HGET", ns, key);

  op->parse = parse_get;
  redis_submit ((SkStoreRedis *)store, op);
}

static void
redis_remove (SkStore *store, const char *ns, const char *key, GTask *task)
{
  RedisOp *op = ns_op (task, "HDEL", ns, key);

  op->parse = parse_any;
  redis_submit ((SkStoreRedis *)store, op);
}

static void
redis_list (SkStore *store, const char *ns, GTask *task)
{
  RedisOp *op = ns_op (task, "HGETALL", ns, NULL);

  op->parse = parse_list;
  redis_submit ((SkStoreRedis *)store, op);
}

static void
redis_claim_room (SkStore *store, const char *room, const char *node, guint64 incarnation,
                  guint64 expected_epoch, GTask *task)
{
  g_autofree char *what = g_strdup_printf ("room %s", room);
  RedisOp *op = op_new_script (task, what, SCRIPT_CLAIM, 2);

  op_addf (op, "sk:room:%s", room);
  op_add (op, PLACED_KEY);
  op_addf (op, "%" G_GUINT64_FORMAT, expected_epoch);
  op_add (op, node);
  op_addf (op, "%" G_GUINT64_FORMAT, incarnation);
  op_add (op, room);
  op->parse = parse_u64;
  op->durable = TRUE;
  redis_submit ((SkStoreRedis *)store, op);
}

static void
redis_get_placement (SkStore *store, const char *room, GTask *task)
{
  g_autofree char *what = g_strdup_printf ("room %s", room);
  RedisOp *op = op_new (task, what);

  op_add (op, "HMGET");
  op_addf (op, "sk:room:%s", room);
  op_add (op, "node");
  op_add (op, "epoch");
  op_add (op, "inc");
  op->parse = parse_placement;
  redis_submit ((SkStoreRedis *)store, op);
}

static void
redis_release_room (SkStore *store, const char *room, guint64 epoch, GTask *task)
{
  g_autofree char *what = g_strdup_printf ("room %s", room);
  RedisOp *op = op_new_script (task, what, SCRIPT_RELEASE, 2);

  op_addf (op, "sk:room:%s", room);
  op_add (op, PLACED_KEY);
  op_addf (op, "%" G_GUINT64_FORMAT, epoch);
  op_add (op, room);
  op->parse = parse_any;
  op->durable = TRUE;
  redis_submit ((SkStoreRedis *)store, op);
}

static void
redis_list_placements (SkStore *store, GTask *task)
{
  RedisOp *op = op_new_script (task, "placements", SCRIPT_PLACEMENTS, 1);

  op_add (op, PLACED_KEY);
  op_add (op, "sk:room:");
  op->parse = parse_placements;
  redis_submit ((SkStoreRedis *)store, op);
}

static RedisOp *
node_op (GTask *task, const char *node, RedisScriptId script, guint n_keys)
{
  g_autofree char *what = g_strdup_printf ("node %s", node);
  RedisOp *op = op_new_script (task, what, script, n_keys);

  op_addf (op, INC_PREFIX "%s", node);
  op_addf (op, LEASE_PREFIX "%s", node);
  return op;
}

static void
redis_join_node (SkStore *store, const char *node, const char *info, guint ttl_ms, GTask *task)
{
  RedisOp *op = node_op (task, node, SCRIPT_JOIN, 3);

  op_add (op, NODES_KEY);
  op_add (op, info);
  op_addf (op, "%u", MAX (ttl_ms, 1)); /* PX 0 is an error; 1 ms is "already gone" */
  op_add (op, node);
  op->parse = parse_u64;
  op->durable = TRUE;
  redis_submit ((SkStoreRedis *)store, op);
}

static void
redis_renew_node (SkStore *store, const char *node, guint64 incarnation, const char *info,
                  guint ttl_ms, GTask *task)
{
  RedisOp *op = node_op (task, node, SCRIPT_RENEW, 2);

  op_addf (op, "%" G_GUINT64_FORMAT, incarnation);
  op_add (op, info);
  op_addf (op, "%u", MAX (ttl_ms, 1));
  op->parse = parse_any;
  redis_submit ((SkStoreRedis *)store, op);
}

static void
redis_retire_node (SkStore *store, const char *node, guint64 incarnation, gboolean force,
                   GTask *task)
{
  RedisOp *op = node_op (task, node, SCRIPT_RETIRE, 2);

  op_addf (op, "%" G_GUINT64_FORMAT, incarnation);
  op_add (op, force ? "1" : "0");
  op->parse = parse_any;
  op->durable = TRUE;
  redis_submit ((SkStoreRedis *)store, op);
}

static void
redis_list_nodes (SkStore *store, GTask *task)
{
  RedisOp *op = op_new_script (task, "nodes", SCRIPT_NODES, 1);

  op_add (op, NODES_KEY);
  op_add (op, INC_PREFIX);
  op_add (op, LEASE_PREFIX);
  op->parse = parse_nodes;
  redis_submit ((SkStoreRedis *)store, op);
}

/* ---- connections -------------------------------------------------------------------------- */

static void
link_on_connect (const redisAsyncContext *ac, int status)
{
  RedisLink *link = ac->data;

  /* On failure hiredis frees @ac right after this returns. */
  if (link != NULL && status != REDIS_OK)
    link_lost (link, FALSE, ac->errstr[0] != '\0' ? ac->errstr : "connect failed");
}

static void
link_on_disconnect (const redisAsyncContext *ac, int status)
{
  RedisLink *link = ac->data;

  if (link != NULL)
    link_lost (link, FALSE, ac->errstr[0] != '\0' ? ac->errstr : "connection closed");
}

static RedisOp *
link_internal_op (RedisLink *link, const char *what, RedisInternalFunc func)
{
  RedisOp *op = op_new (NULL, what);

  op->internal = func;
  return op;
}

static gboolean
link_retry_cb (gpointer user_data)
{
  RedisLink *link = user_data;
  SkStoreRedis *self = link->self;

  g_clear_pointer (&link->retry_source, g_source_unref);
  switch (link->kind) {
    case LINK_COMMAND:
      cmd_start (self);
      break;
    case LINK_PUBSUB:
      sub_start (self);
      break;
    case LINK_WATCH:
      watch_start (self);
      break;
    case LINK_QUERY:
      break;
  }
  return G_SOURCE_REMOVE;
}

/* Retries @link after its backoff: 50 ms, doubling up to 1 s, reset once it is ready. */
static void
link_schedule_retry (RedisLink *link)
{
  if (link->retry_source != NULL || link->self->closing)
    return;
  link->backoff_ms = link->backoff_ms == 0 ? SK_REDIS_BACKOFF_MIN_MS
                                           : MIN (link->backoff_ms * 2, SK_REDIS_BACKOFF_MAX_MS);
  link->retry_source = g_timeout_source_new (link->backoff_ms);
  g_source_set_callback (link->retry_source, link_retry_cb, link, NULL);
  g_source_set_static_name (link->retry_source, "sk-store-redis-retry");
  g_source_attach (link->retry_source, link->self->context);
}

static void
link_cancel_retry (RedisLink *link)
{
  if (link->retry_source != NULL) {
    g_source_destroy (link->retry_source);
    g_clear_pointer (&link->retry_source, g_source_unref);
  }
}

/* Starts connecting @link; returns with link->ac set, or with link_lost() already run. */
static void
link_connect (RedisLink *link, const char *host, int port)
{
  redisAsyncContext *ac;

  g_return_if_fail (link->ac == NULL);
  if (link->host != host) {
    g_free (link->host);
    link->host = g_strdup (host);
  }
  link->port = port;
  link->ready = FALSE;
  link->connect_us = g_get_monotonic_time ();

  ac = redisAsyncConnect (host, port);
  if (ac == NULL || ac->err != 0) {
    g_autofree char *why = g_strdup (ac != NULL ? ac->errstr : "out of memory");

    if (ac != NULL)
      redisAsyncFree (ac);
    /* Report it like any failed attempt, from a fresh stack. */
    link->ac = NULL;
    g_debug ("%s link to %s:%d: %s", link->name, host, port, why);
    link_lost (link, FALSE, why);
    return;
  }
  ac->data = link;
  sk_redis_glib_attach (ac, link->self->context, G_PRIORITY_DEFAULT);
  redisAsyncSetConnectCallback (ac, link_on_connect);
  redisAsyncSetDisconnectCallback (ac, link_on_disconnect);
  link->ac = ac;
}

static void
link_close (RedisLink *link, const char *why)
{
  redisAsyncContext *ac = link->ac;

  link_cancel_retry (link);
  if (ac == NULL)
    return;
  link->ac = NULL;
  link->ready = FALSE;
  ac->data = NULL;
  link_detach_inflight (link, why);
  /* Deferred by hiredis when we are inside one of this context's callbacks. */
  redisAsyncFree (ac);
}

static void
cmd_down (SkStoreRedis *self, const char *why)
{
  RedisLink *cmd = &self->cmd;

  self->cmd_connecting = FALSE;
  self->role_pending = FALSE;
  redis_fail_pending (self, "Redis is unreachable");
  /* Notifications come from the master the commands go to; resubscribe with it. */
  link_close (&self->sub, "the command connection was lost");
  if (self->down_since_us == 0) {
    self->down_since_us = g_get_monotonic_time ();
    if (self->master_host != NULL)
      g_warning ("state store: lost Redis %s:%d (%s); calls fail until it is back, retrying",
                 self->master_host, self->master_port, why);
    else
      g_warning ("state store: cannot reach Redis (%s: %s); retrying", self->parent.uri, why);
  } else {
    g_debug ("state store: Redis attempt failed (%s:%d: %s)", cmd->host, cmd->port, why);
  }
  link_schedule_retry (cmd);
}

/* @link has no connection any more (hiredis reported it, or we gave it up: @free_ac). */
static void
link_lost (RedisLink *link, gboolean free_ac, const char *why)
{
  SkStoreRedis *self = link->self;
  redisAsyncContext *ac = link->ac;
  g_autofree char *reason = g_strdup (why); /* @why may live in @ac */

  if (ac != NULL) {
    link->ac = NULL;
    ac->data = NULL;
    link_detach_inflight (link, reason);
    if (free_ac)
      redisAsyncFree (ac);
  }
  link->ready = FALSE;
  if (self->closing)
    return;

  switch (link->kind) {
    case LINK_COMMAND:
      cmd_down (self, reason);
      break;
    case LINK_PUBSUB:
      g_debug ("state store: pubsub link: %s", reason);
      if (self->cmd.ready)
        link_schedule_retry (link);
      break;
    case LINK_QUERY:
      g_debug ("state store: sentinel %s:%d: %s", link->host, link->port, reason);
      /* The sentinel did not answer: ask the next one. */
      if (self->cmd_connecting && self->cmd.ac == NULL) {
        self->query_index++;
        query_next (self);
      }
      break;
    case LINK_WATCH:
      g_debug ("state store: sentinel watch %s:%d: %s", link->host, link->port, reason);
      self->watch_index = (self->watch_index + 1) % self->sentinel_hosts->len;
      link_schedule_retry (link);
      break;
  }
}

/* -- the command connection -- */

static void
cmd_ready (SkStoreRedis *self)
{
  RedisLink *cmd = &self->cmd;
  RedisOp *op;
  gboolean moved
      = self->master_host != NULL
        && (g_strcmp0 (self->master_host, cmd->host) != 0 || self->master_port != cmd->port);

  if (moved)
    g_message ("state store: Redis master is now %s:%d (was %s:%d)", cmd->host, cmd->port,
               self->master_host, self->master_port);
  else if (self->down_since_us != 0 && self->master_host != NULL)
    g_message ("state store: Redis %s:%d is back after %.1f s", cmd->host, cmd->port,
               (g_get_monotonic_time () - self->down_since_us) / 1e6);
  else if (self->master_host == NULL)
    g_message ("state store: using Redis %s:%d (db %d, %u replica%s)", cmd->host, cmd->port,
               self->db, self->replicas, self->replicas == 1 ? "" : "s");
  g_free (self->master_host);
  self->master_host = g_strdup (cmd->host);
  self->master_port = cmd->port;
  self->down_since_us = 0;

  cmd->ready = TRUE;
  cmd->backoff_ms = 0;
  self->cmd_connecting = FALSE;
  self->role_us = g_get_monotonic_time ();
  while ((op = g_queue_pop_head (&self->pending)) != NULL)
    op_send (cmd, op);
  sub_start (self);
}

/* ROLE: [ "master", offset, [ [ip, port, offset], … ] ] or [ "slave", … ] or [ "sentinel", … ] */
static gboolean
reply_role (const redisReply *reply, guint *out_replicas)
{
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 1
      || !reply_is_string (reply->element[0]))
    return FALSE;
  if (strcmp (reply->element[0]->str, "master") != 0)
    return FALSE;
  *out_replicas = 0;
  if (reply->elements >= 3 && reply->element[2]->type == REDIS_REPLY_ARRAY)
    *out_replicas = reply->element[2]->elements;
  return TRUE;
}

static void
cmd_role_cb (RedisOp *op, const redisReply *reply)
{
  SkStoreRedis *self = op->link->self;
  gboolean handshake = !self->cmd.ready;
  guint replicas = 0;

  self->role_pending = FALSE;
  if (!reply_role (reply, &replicas)) {
    g_autofree char *why
        = g_strdup_printf ("%s:%d is not a master (ROLE says %s)", self->cmd.host, self->cmd.port,
                           reply->type == REDIS_REPLY_ARRAY && reply->elements > 0
                                   && reply_is_string (reply->element[0])
                               ? reply->element[0]->str
                           : reply->type == REDIS_REPLY_ERROR ? reply->str
                                                              : "?");
    link_lost (&self->cmd, TRUE, why);
    return;
  }
  if (replicas != self->replicas)
    g_debug ("state store: Redis %s:%d has %u replica(s)", self->cmd.host, self->cmd.port,
             replicas);
  self->replicas = replicas;
  if (handshake)
    cmd_ready (self);
}

static void
cmd_handshake_cb (RedisOp *op, const redisReply *reply)
{
  SkStoreRedis *self = op->link->self;

  if (reply->type == REDIS_REPLY_ERROR) {
    g_autofree char *why = g_strdup_printf ("%s: %s", op->what, reply->str);

    link_lost (&self->cmd, TRUE, why);
  }
}

static void
cmd_send_role (SkStoreRedis *self)
{
  RedisOp *op = link_internal_op (&self->cmd, "ROLE", cmd_role_cb);

  op_add (op, "ROLE");
  self->role_pending = TRUE;
  self->role_us = g_get_monotonic_time ();
  op_send (&self->cmd, op);
}

static void
cmd_connect (SkStoreRedis *self, const char *host, int port)
{
  RedisLink *cmd = &self->cmd;
  RedisOp *op;

  link_connect (cmd, host, port);
  if (cmd->ac == NULL)
    return;
  /* Pipelined behind the connect: database, scripts, then make sure it is the master. */
  if (self->db != 0) {
    op = link_internal_op (cmd, "SELECT", cmd_handshake_cb);
    op_add (op, "SELECT");
    op_addf (op, "%d", self->db);
    op_send (cmd, op);
  }
  for (guint i = 0; i < N_SCRIPTS; i++) {
    op = link_internal_op (cmd, "SCRIPT LOAD", cmd_handshake_cb);
    op_add (op, "SCRIPT");
    op_add (op, "LOAD");
    op_add (op, redis_scripts[i]);
    op_send (cmd, op);
  }
  cmd_send_role (self);
}

static void
query_reply_cb (RedisOp *op, const redisReply *reply)
{
  SkStoreRedis *self = op->link->self;
  guint64 port = 0;

  if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
      && reply->element[0]->type == REDIS_REPLY_STRING && reply_is_string (reply->element[1])
      && g_ascii_string_to_unsigned (reply->element[1]->str, 10, 1, 65535, &port, NULL)) {
    g_autofree char *host = g_strdup (reply->element[0]->str);

    link_close (&self->query, "done");
    cmd_connect (self, host, (int)port);
    return;
  }
  g_debug ("state store: sentinel %s:%d does not know master %s", self->query.host,
           self->query.port, self->master_name);
  link_close (&self->query, "no answer");
  self->query_index++;
  query_next (self);
}

/* Asks the sentinels, in order, where the master is. */
static void
query_next (SkStoreRedis *self)
{
  RedisLink *query = &self->query;
  RedisOp *op;

  if (self->query_index >= self->sentinel_hosts->len) {
    cmd_down (self, "no sentinel knows the master");
    return;
  }
  link_connect (query, g_ptr_array_index (self->sentinel_hosts, self->query_index),
                g_array_index (self->sentinel_ports, int, self->query_index));
  if (query->ac == NULL)
    return; /* link_lost moved on to the next sentinel */
  op = link_internal_op (query, "SENTINEL", query_reply_cb);
  op_add (op, "SENTINEL");
  op_add (op, "get-master-addr-by-name");
  op_add (op, self->master_name);
  op_send (query, op);
}

static void
cmd_start (SkStoreRedis *self)
{
  if (self->closing || self->cmd.ac != NULL || self->query.ac != NULL)
    return;
  link_cancel_retry (&self->cmd);
  self->cmd_connecting = TRUE;
  if (self->sentinel_hosts != NULL) {
    self->query_index = 0;
    query_next (self);
  } else {
    cmd_connect (self, self->host, self->port);
  }
}

/* Drops the command connection and looks for the master again right away. */
static void
cmd_restart (SkStoreRedis *self, const char *why)
{
  link_close (&self->query, why);
  if (self->cmd.ac != NULL)
    link_lost (&self->cmd, TRUE, why);
  link_cancel_retry (&self->cmd);
  self->cmd.backoff_ms = 0;
  cmd_start (self);
}

/* -- watch notifications -- */

static void
resync_reply_cb (RedisOp *op, const redisReply *reply)
{
  SkStoreRedis *self = op->link->self;
  guint64 seq;

  if (reply_to_u64 (reply, &seq) && seq > 0)
    sk_store_watches_notify (self->watches, op->what, seq);
}

/* After (re)subscribing: anything appended while we were not listening is owed to watchers,
 * so each watched room is notified once with its current last_seq. */
static void
sub_resync (SkStoreRedis *self)
{
  g_autoptr (GPtrArray) rooms = NULL;

  if (!self->cmd.ready)
    return;
  rooms = sk_store_watches_get_rooms (self->watches);
  for (guint i = 0; i < rooms->len; i++) {
    const char *room = g_ptr_array_index (rooms, i);
    RedisOp *op = link_internal_op (&self->cmd, room, resync_reply_cb);

    op_add (op, "HGET");
    op_addf (op, "sk:room:%s", room);
    op_add (op, "last_seq");
    op_send (&self->cmd, op);
  }
}

static void
sub_message_cb (redisAsyncContext *ac, void *r, void *privdata)
{
  RedisLink *link = ac->data;
  const redisReply *reply = r;
  const redisReply *kind;
  guint64 seq;

  if (link == NULL)
    return;
  if (reply == NULL) {
    link_lost (link, FALSE, "connection lost");
    return;
  }
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements < 3
      || !reply_is_string (reply->element[0]))
    return;
  kind = reply->element[0];
  if (strcmp (kind->str, "psubscribe") == 0) {
    link->ready = TRUE;
    link->backoff_ms = 0;
    sub_resync (link->self);
  } else if (strcmp (kind->str, "pmessage") == 0 && reply->elements == 4
             && reply->element[2]->type == REDIS_REPLY_STRING
             && g_str_has_prefix (reply->element[2]->str, link->self->channel_prefix)
             && reply_to_u64 (reply->element[3], &seq)) {
    sk_store_watches_notify (link->self->watches,
                             reply->element[2]->str + strlen (link->self->channel_prefix), seq);
  }
}

static void
sub_start (SkStoreRedis *self)
{
  RedisLink *sub = &self->sub;
  const char *argv[] = { "PSUBSCRIBE", self->pattern };
  size_t lens[] = { strlen (argv[0]), strlen (argv[1]) };

  if (self->closing || sub->ac != NULL || !self->cmd.ready)
    return;
  link_cancel_retry (sub);
  link_connect (sub, self->cmd.host, self->cmd.port);
  if (sub->ac != NULL
      && redisAsyncCommandArgv (sub->ac, sub_message_cb, NULL, 2, argv, lens) != REDIS_OK)
    link_lost (sub, TRUE, "PSUBSCRIBE failed");
}

/* -- the sentinel watch -- */

static void
watch_message_cb (redisAsyncContext *ac, void *r, void *privdata)
{
  RedisLink *link = ac->data;
  const redisReply *reply = r;
  SkStoreRedis *self;
  g_auto (GStrv) fields = NULL;

  if (link == NULL)
    return;
  self = link->self;
  if (reply == NULL) {
    link_lost (link, FALSE, "connection lost");
    return;
  }
  if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 3
      || !reply_is_string (reply->element[0]))
    return;
  if (strcmp (reply->element[0]->str, "subscribe") == 0) {
    link->ready = TRUE;
    link->backoff_ms = 0;
    return;
  }
  if (strcmp (reply->element[0]->str, "message") != 0
      || reply->element[2]->type != REDIS_REPLY_STRING)
    return;
  /* "<master name> <old ip> <old port> <new ip> <new port>" */
  fields = g_strsplit (reply->element[2]->str, " ", 6);
  if (g_strv_length (fields) != 5 || strcmp (fields[0], self->master_name) != 0)
    return;
  g_message ("state store: sentinel %s:%d: master %s moved from %s:%s to %s:%s; reconnecting",
             link->host, link->port, fields[0], fields[1], fields[2], fields[3], fields[4]);
  cmd_restart (self, "sentinel switched the master");
}

static void
watch_start (SkStoreRedis *self)
{
  RedisLink *watch = &self->watch;
  const char *argv[] = { "SUBSCRIBE", "+switch-master" };
  size_t lens[] = { strlen (argv[0]), strlen (argv[1]) };

  if (self->closing || watch->ac != NULL)
    return;
  link_cancel_retry (watch);
  link_connect (watch, g_ptr_array_index (self->sentinel_hosts, self->watch_index),
                g_array_index (self->sentinel_ports, int, self->watch_index));
  if (watch->ac != NULL
      && redisAsyncCommandArgv (watch->ac, watch_message_cb, NULL, 2, argv, lens) != REDIS_OK)
    link_lost (watch, TRUE, "SUBSCRIBE failed");
}

/* -- timeouts: hiredis 0.14 has none of its own -- */

static void
link_check_timeouts (RedisLink *link, gint64 now)
{
  RedisOp *head;

  if (link->ac == NULL)
    return;
  if (!link->ready && now - link->connect_us > SK_REDIS_CONNECT_TIMEOUT_MS * 1000) {
    link_lost (link, TRUE, "connect timed out");
    return;
  }
  head = g_queue_peek_head (&link->inflight);
  if (head != NULL && now - head->sent_us > SK_REDIS_REPLY_TIMEOUT_MS * 1000)
    link_lost (link, TRUE, "no reply in time");
}

static gboolean
redis_tick_cb (gpointer user_data)
{
  SkStoreRedis *self = user_data;
  gint64 now = g_get_monotonic_time ();

  link_check_timeouts (&self->cmd, now);
  link_check_timeouts (&self->query, now);
  link_check_timeouts (&self->sub, now);
  link_check_timeouts (&self->watch, now);
  /* Keep the replica count current (WAIT or not) and notice a demoted master. */
  if (self->cmd.ready && !self->role_pending
      && now - self->role_us > SK_REDIS_ROLE_PERIOD_MS * 1000)
    cmd_send_role (self);
  return G_SOURCE_CONTINUE;
}

/* ---- lifetime ----------------------------------------------------------------------------- */

static void
redis_free (SkStore *store)
{
  SkStoreRedis *self = (SkStoreRedis *)store;

  self->closing = TRUE;
  if (self->tick_source != NULL) {
    g_source_destroy (self->tick_source);
    g_source_unref (self->tick_source);
  }
  link_close (&self->watch, "the store was closed");
  link_close (&self->query, "the store was closed");
  link_close (&self->sub, "the store was closed");
  link_close (&self->cmd, "the store was closed");
  redis_fail_pending (self, "the store was closed");

  sk_store_watches_free (self->watches);
  for (guint i = 0; i < N_SCRIPTS; i++)
    g_free (self->sha[i]);
  g_free (self->cmd.host);
  g_free (self->sub.host);
  g_free (self->query.host);
  g_free (self->watch.host);
  g_free (self->master_host);
  g_free (self->channel_prefix);
  g_free (self->pattern);
  g_free (self->host);
  g_free (self->master_name);
  g_clear_pointer (&self->sentinel_hosts, g_ptr_array_unref);
  g_clear_pointer (&self->sentinel_ports, g_array_unref);
  g_main_context_unref (self->context);
  g_free (self);
}

static const SkStoreVTable redis_vtable = {
  .free = redis_free,
  .append_event = redis_append_event,
  .read_events = redis_read_events,
  .last_seq = redis_last_seq,
  .watch_events = redis_watch_events,
  .unwatch_events = redis_unwatch_events,
  .put = redis_put,
  .get = redis_get,
  .remove = redis_remove,
  .list = redis_list,
  .claim_room = redis_claim_room,
  .get_placement = redis_get_placement,
  .release_room = redis_release_room,
  .list_placements = redis_list_placements,
  .join_node = redis_join_node,
  .renew_node = redis_renew_node,
  .retire_node = redis_retire_node,
  .list_nodes = redis_list_nodes,
};

/* "HOST:PORT" or "[V6]:PORT". */
static gboolean
parse_host_port (const char *s, char **out_host, int *out_port)
{
  const char *colon;
  guint64 port;
  g_autofree char *host = NULL;

  if (s[0] == '[') {
    const char *end = strchr (s, ']');

    if (end == NULL || end[1] != ':')
      return FALSE;
    host = g_strndup (s + 1, end - s - 1);
    colon = end + 1;
  } else {
    colon = strrchr (s, ':');
    if (colon == NULL)
      return FALSE;
    host = g_strndup (s, colon - s);
  }
  if (host[0] == '\0' || !g_ascii_string_to_unsigned (colon + 1, 10, 1, 65535, &port, NULL))
    return FALSE;
  *out_host = g_steal_pointer (&host);
  *out_port = (int)port;
  return TRUE;
}

static gboolean
redis_parse_uri (SkStoreRedis *self, const char *uri, GError **error)
{
  gboolean sentinel = g_str_has_prefix (uri, "sentinel://");
  const char *rest = uri + strlen (sentinel ? "sentinel://" : "redis://");
  const char *slash = strchr (rest, '/');
  g_autofree char *authority = slash != NULL ? g_strndup (rest, slash - rest) : g_strdup (rest);
  const char *path = slash != NULL ? slash + 1 : "";

  if (!sentinel) {
    guint64 db = 0;

    if (!parse_host_port (authority, &self->host, &self->port)
        || (path[0] != '\0' && !g_ascii_string_to_unsigned (path, 10, 0, 10000, &db, NULL))) {
      g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                   "store \"%s\": expected redis://HOST:PORT[/DB]", uri);
      return FALSE;
    }
    self->db = (int)db;
    return TRUE;
  }

  g_auto (GStrv) hosts = g_strsplit (authority, ",", -1);

  self->sentinel_hosts = g_ptr_array_new_with_free_func (g_free);
  self->sentinel_ports = g_array_new (FALSE, FALSE, sizeof (int));
  for (guint i = 0; hosts[i] != NULL; i++) {
    char *host;
    int port;

    if (!parse_host_port (hosts[i], &host, &port)) {
      g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                   "store \"%s\": bad sentinel \"%s\" (expected HOST:PORT)", uri, hosts[i]);
      return FALSE;
    }
    g_ptr_array_add (self->sentinel_hosts, host);
    g_array_append_val (self->sentinel_ports, port);
  }
  if (self->sentinel_hosts->len == 0 || path[0] == '\0' || strchr (path, '/') != NULL) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                 "store \"%s\": expected sentinel://HOST:PORT[,HOST:PORT...]/MASTER", uri);
    return FALSE;
  }
  self->master_name = g_strdup (path);
  return TRUE;
}

SkStore *
sk_store_redis_new (const char *uri, GError **error)
{
  SkStoreRedis *self = g_new0 (SkStoreRedis, 1);
  RedisLink *links[] = { &self->cmd, &self->sub, &self->query, &self->watch };
  static const char *const names[] = { "command", "pubsub", "sentinel query", "sentinel watch" };

  self->parent.vtable = &redis_vtable;
  self->context = g_main_context_ref_thread_default ();
  self->watches = sk_store_watches_new (self->context, "sk-store-redis-notify");
  for (guint i = 0; i < G_N_ELEMENTS (links); i++) {
    links[i]->self = self;
    links[i]->kind = (RedisLinkKind)i;
    links[i]->name = names[i];
  }
  for (guint i = 0; i < N_SCRIPTS; i++)
    self->sha[i] = g_compute_checksum_for_string (G_CHECKSUM_SHA1, redis_scripts[i], -1);

  if (!redis_parse_uri (self, uri, error)) {
    self->closing = TRUE;
    redis_free (&self->parent);
    return NULL;
  }
  self->parent.uri = g_strdup (uri);
  self->channel_prefix = g_strdup_printf ("sk:ev:%d:", self->db);
  self->pattern = g_strconcat (self->channel_prefix, "*", NULL);

  /* hiredis writes with write(2): a server that dies mid-write must not kill the process. */
  {
    struct sigaction old;

    if (sigaction (SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL)
      signal (SIGPIPE, SIG_IGN);
  }

  self->tick_source = g_timeout_source_new (SK_REDIS_TICK_MS);
  g_source_set_callback (self->tick_source, redis_tick_cb, self, NULL);
  g_source_set_static_name (self->tick_source, "sk-store-redis-tick");
  g_source_attach (self->tick_source, self->context);

  /* Connecting is asynchronous: calls made meanwhile wait for this first attempt. */
  cmd_start (self);
  if (self->sentinel_hosts != NULL)
    watch_start (self);
  return &self->parent;
}
