/*
 * The Redis state store against real redis-server processes: the shared store contract, then
 * what only a networked store has to get right: restarts and stalls of the server, several
 * nodes sharing it (watches, claims), and a Sentinel failover.
 */
#include "store-contract.h"
#include "sk-test-redis.h"

static TrServer contract_server;

static SkStore *
tr_store_new_uri (const char *uri)
{
  g_autoptr (GError) error = NULL;
  SkStore *store = sk_store_new (uri, &error);

  g_assert_no_error (error);
  g_assert_nonnull (store);
  return store;
}

/* Waits until @store has both its connections up: a watch on a private room sees an append
 * (by pub/sub, or by the catch-up that follows a subscription). */
static void
tr_store_warm_up (SkStore *store)
{
  static guint counter;
  g_autofree char *room = g_strdup_printf ("~warmup-%u-%u", (guint)getpid (), ++counter);
  WatchLog w = { 0 };
  guint id = sk_store_watch_events (store, room, on_watch, &w, NULL);
  RtAsync a = { 0 };
  g_autoptr (GError) error = NULL;

  sk_store_append_event_async (store, room, 0, 1, "{}", NULL, rt_async_cb, &a);
  g_assert_true (sk_store_append_event_finish (store, rt_async_wait (&a), &error));
  g_assert_no_error (error);
  rt_async_clear (&a);
  sc_wait_seq (&w, 1);
  sk_store_unwatch_events (store, id);
  g_free (w.room);
}

static SkStore *
tr_store_new (int port)
{
  g_autofree char *uri = g_strdup_printf ("redis://127.0.0.1:%d", port);
  SkStore *store = tr_store_new_uri (uri);

  tr_store_warm_up (store);
  return store;
}

static void
tr_flushall (int port)
{
  redisReply *reply = tr_command (port, "FLUSHALL");

  g_assert_nonnull (reply);
  g_assert_cmpint (reply->type, ==, REDIS_REPLY_STATUS);
  freeReplyObject (reply);
}

static void
run_contract (gconstpointer data)
{
  ScTestFunc func = (ScTestFunc)data;
  g_autoptr (SkStore) store = NULL;

  if (!tr_have_redis ()) {
    g_test_skip ("redis-server is not installed");
    return;
  }
  tr_flushall (contract_server.port);
  store = tr_store_new (contract_server.port);
  func (store);
}

/* ---- helpers ------------------------------------------------------------------------------ */

/* One append, waited for; returns the error code, or -1 on success. */
static int
tr_append (SkStore *store, const char *room, guint64 epoch, guint64 seq)
{
  RtAsync a = { 0 };
  g_autoptr (GError) error = NULL;
  g_autofree char *json = g_strdup_printf ("{\"seq\":%" G_GUINT64_FORMAT "}", seq);
  int code = -1;

  sk_store_append_event_async (store, room, epoch, seq, json, NULL, rt_async_cb, &a);
  if (!sk_store_append_event_finish (store, rt_async_wait (&a), &error)) {
    g_assert_true (error->domain == SK_ERROR);
    code = error->code;
  }
  rt_async_clear (&a);
  return code;
}

/* last_seq, or -(error code) - 1. */
static gint64
tr_last_seq (SkStore *store, const char *room)
{
  RtAsync a = { 0 };
  g_autoptr (GError) error = NULL;
  guint64 seq = 0;
  gint64 result;

  sk_store_last_seq_async (store, room, NULL, rt_async_cb, &a);
  if (sk_store_last_seq_finish (store, rt_async_wait (&a), &seq, &error))
    result = (gint64)seq;
  else
    result = -(gint64)error->code - 1;
  rt_async_clear (&a);
  return result;
}

/* ---- URIs --------------------------------------------------------------------------------- */

static void
test_uri (void)
{
  static const char *const bad[] = {
    "redis://",
    "redis://127.0.0.1",
    "redis://127.0.0.1:0",
    "redis://127.0.0.1:70000",
    "redis://127.0.0.1:6379/x",
    "redis://:6379",
    "sentinel://127.0.0.1:26379",
    "sentinel://127.0.0.1:26379/",
    "sentinel://127.0.0.1/m",
    "sentinel://a:1,,b:2/m",
  };
  g_autoptr (GError) error = NULL;
  g_autoptr (SkStore) store = NULL;
  g_autofree char *uri = NULL;
  redisReply *reply;

  for (guint i = 0; i < G_N_ELEMENTS (bad); i++) {
    g_assert_null (sk_store_new (bad[i], &error));
    g_assert_error (error, SK_ERROR, SK_ERROR_INVALID);
    g_clear_error (&error);
  }
  if (!tr_have_redis ()) {
    g_test_skip ("redis-server is not installed");
    return;
  }

  /* A database number selects where the keys go. */
  tr_flushall (contract_server.port);
  uri = g_strdup_printf ("redis://127.0.0.1:%d/3", contract_server.port);
  store = tr_store_new_uri (uri);
  g_assert_cmpstr (store->uri, ==, uri);
  g_assert_cmpint (tr_append (store, "r", 0, 1), ==, -1);
  reply = tr_command (contract_server.port, "DBSIZE");
  g_assert_cmpint (reply->integer, ==, 0);
  freeReplyObject (reply);
  {
    redisContext *c = tr_connect (contract_server.port);

    freeReplyObject (redisCommand (c, "SELECT 3"));
    reply = redisCommand (c, "LLEN sk:log:r");
    g_assert_cmpint (reply->integer, ==, 1);
    freeReplyObject (reply);
    redisFree (c);
  }
}

/* ---- a server that restarts or stalls ----------------------------------------------------- */

typedef struct {
  SkStore *store;
  guint done, ok, unavailable, other;
} Tally;

static void
tally_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Tally *t = user_data;
  g_autoptr (GError) error = NULL;

  if (sk_store_append_event_finish (t->store, result, &error))
    t->ok++;
  else if (g_error_matches (error, SK_ERROR, SK_ERROR_UNAVAILABLE))
    t->unavailable++;
  else
    t->other++;
  t->done++;
}

static void
test_reconnect (void)
{
  TrServer server = { 0 };
  g_autoptr (SkStore) store = NULL;
  WatchLog w = { 0 };
  Tally t = { 0 };
  guint watch_id, failures = 0;
  gint64 deadline;
  const guint n_burst = 2000;

  if (!tr_have_redis ()) {
    g_test_skip ("redis-server is not installed");
    return;
  }
  tr_server_start (&server, NULL);
  store = tr_store_new (server.port);
  t.store = store;
  watch_id = sk_store_watch_events (store, "r", on_watch, &w, NULL);
  g_assert_cmpint (tr_append (store, "r", 0, 1), ==, -1);
  sc_wait_seq (&w, 1);

  /* A burst in flight when the server dies: every call is answered, none hangs. */
  for (guint i = 0; i < n_burst; i++)
    sk_store_append_event_async (store, "r", 0, 2 + i, "{}", NULL, tally_cb, &t);
  rt_spin (5); /* let some be answered and some be on the wire */
  tr_server_kill (&server);
  deadline = g_get_monotonic_time () + 5 * G_USEC_PER_SEC;
  while (t.done < n_burst && g_get_monotonic_time () < deadline)
    if (!g_main_context_iteration (NULL, FALSE))
      g_usleep (200);
  g_assert_cmpuint (t.done, ==, n_burst);
  g_assert_cmpuint (t.other, ==, 0);
  g_test_message ("burst at the kill: %u acknowledged, %u unavailable", t.ok, t.unavailable);

  /* While it is down, calls fail at once with UNAVAILABLE. */
  for (guint i = 0; i < 5; i++) {
    g_assert_cmpint (tr_last_seq (store, "r"), ==, -(gint64)SK_ERROR_UNAVAILABLE - 1);
    rt_spin (30);
  }

  /* Back (empty: no persistence): the store reconnects by itself. */
  tr_server_start (&server, NULL);
  deadline = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;
  while (tr_last_seq (store, "r") < 0) {
    g_assert_cmpint (g_get_monotonic_time (), <, deadline);
    failures++;
    rt_spin (20);
  }
  g_test_message ("calls refused while reconnecting: %u", failures);
  g_assert_cmpint (tr_last_seq (store, "r"), ==, 0);

  /* The watch survived the reconnect. */
  w.last_seq = 0;
  g_assert_cmpint (tr_append (store, "r", 0, 1), ==, -1);
  sc_wait_seq (&w, 1);
  g_assert_cmpint (tr_append (store, "r", 0, 2), ==, -1);
  sc_wait_seq (&w, 2);

  sk_store_unwatch_events (store, watch_id);
  g_free (w.room);
  g_clear_pointer (&store, sk_store_free);
  tr_server_clear (&server);
}

/* A server that stops answering (SIGSTOP) must not hang callers: calls in flight fail. */
static void
test_stalled (void)
{
  TrServer server = { 0 };
  g_autoptr (SkStore) store = NULL;
  gint64 start;

  if (!tr_have_redis ()) {
    g_test_skip ("redis-server is not installed");
    return;
  }
  tr_server_start (&server, NULL);
  store = tr_store_new (server.port);
  g_assert_cmpint (tr_append (store, "r", 0, 1), ==, -1);

  tr_server_signal (&server, SIGSTOP);
  start = g_get_monotonic_time ();
  {
    RtAsync a = { 0 };
    g_autoptr (GError) error = NULL;
    guint64 seq;

    sk_store_last_seq_async (store, "r", NULL, rt_async_cb, &a);
    rt_wait_flag (&a.done, 10000);
    g_assert_false (sk_store_last_seq_finish (store, a.result, &seq, &error));
    g_assert_error (error, SK_ERROR, SK_ERROR_UNAVAILABLE);
    rt_async_clear (&a);
  }
  g_test_message ("stalled call failed after %.1f s", (g_get_monotonic_time () - start) / 1e6);
  tr_server_signal (&server, SIGCONT);

  {
    gint64 deadline = g_get_monotonic_time () + 10 * G_USEC_PER_SEC;

    while (tr_last_seq (store, "r") != 1) {
      g_assert_cmpint (g_get_monotonic_time (), <, deadline);
      rt_spin (20);
    }
  }
  g_assert_cmpint (tr_append (store, "r", 0, 2), ==, -1);
  g_clear_pointer (&store, sk_store_free);
  tr_server_clear (&server);
}

/* A caller may free the store from a completion; calls still in flight then fail. */
typedef struct {
  SkStore *store;
  guint freed_by;
  Tally tally;
} FreeInCallback;

static void
free_in_callback_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  FreeInCallback *f = user_data;
  g_autoptr (GError) error = NULL;

  if (f->store == NULL) {
    /* Answered after the free: must be the store going away, not a reply. */
    g_assert_false (g_task_propagate_boolean (G_TASK (result), &error));
    g_assert_error (error, SK_ERROR, SK_ERROR_UNAVAILABLE);
    f->tally.unavailable++;
  } else {
    g_assert_true (sk_store_append_event_finish (f->store, result, &error));
    g_clear_pointer (&f->store, sk_store_free);
    f->tally.ok++;
  }
  f->tally.done++;
}

static void
test_free_in_callback (void)
{
  FreeInCallback f = { 0 };
  const guint n = 500;

  if (!tr_have_redis ()) {
    g_test_skip ("redis-server is not installed");
    return;
  }
  tr_flushall (contract_server.port);
  f.store = tr_store_new (contract_server.port);
  for (guint i = 0; i < n; i++)
    sk_store_append_event_async (f.store, "r", 0, 1 + i, "{}", NULL, free_in_callback_cb, &f);
  while (f.tally.done < n)
    g_main_context_iteration (NULL, TRUE);
  g_assert_null (f.store);
  g_assert_cmpuint (f.tally.ok, ==, 1);
  g_assert_cmpuint (f.tally.unavailable, ==, n - 1);
}

/* ---- several nodes ------------------------------------------------------------------------ */

static void
test_two_nodes_watch (void)
{
  g_autoptr (SkStore) a = NULL;
  g_autoptr (SkStore) b = NULL;
  g_autoptr (GPtrArray) log = NULL;
  WatchLog w = { 0 }, other = { 0 };
  guint id, other_id;

  if (!tr_have_redis ()) {
    g_test_skip ("redis-server is not installed");
    return;
  }
  tr_flushall (contract_server.port);
  a = tr_store_new (contract_server.port);
  b = tr_store_new (contract_server.port);
  id = sk_store_watch_events (a, "shared", on_watch, &w, NULL);
  other_id = sk_store_watch_events (a, "elsewhere", on_watch, &other, NULL);

  /* Node b writes, node a's watcher hears it and can read it from the store. */
  for (guint64 seq = 1; seq <= 3; seq++)
    g_assert_cmpint (tr_append (b, "shared", 0, seq), ==, -1);
  sc_wait_seq (&w, 3);
  g_assert_cmpstr (w.room, ==, "shared");
  log = rt_read_log (a, "shared");
  g_assert_cmpuint (log->len, ==, 3);
  rt_assert_contiguous (log);
  rt_spin (SC_QUIET_MS);
  g_assert_cmpuint (other.calls, ==, 0);

  sk_store_unwatch_events (a, id);
  sk_store_unwatch_events (a, other_id);
  g_free (w.room);
}

static void
test_concurrent_claims (void)
{
  g_autoptr (SkStore) a = NULL;
  g_autoptr (SkStore) b = NULL;
  const guint n_rooms = 50;
  guint a_wins = 0;

  if (!tr_have_redis ()) {
    g_test_skip ("redis-server is not installed");
    return;
  }
  tr_flushall (contract_server.port);
  a = tr_store_new (contract_server.port);
  b = tr_store_new (contract_server.port);

  for (guint i = 0; i < n_rooms; i++) {
    g_autofree char *room = g_strdup_printf ("room-%u", i);
    RtAsync ra = { 0 }, rb = { 0 }, rp = { 0 };
    g_autoptr (GError) ea = NULL;
    g_autoptr (GError) eb = NULL;
    g_autofree char *node = NULL;
    guint64 epoch_a = 0, epoch_b = 0, epoch = 0;
    gboolean ok_a, ok_b;

    /* Both in flight at once; every other round b gets a head start, so each side wins
     * some and the loser is refused whichever it is. */
    if (i % 2 == 0) {
      sk_store_claim_room_async (a, room, "na", 1, 0, NULL, rt_async_cb, &ra);
      sk_store_claim_room_async (b, room, "nb", 1, 0, NULL, rt_async_cb, &rb);
    } else {
      sk_store_claim_room_async (b, room, "nb", 1, 0, NULL, rt_async_cb, &rb);
      g_main_context_iteration (NULL, FALSE);
      sk_store_claim_room_async (a, room, "na", 1, 0, NULL, rt_async_cb, &ra);
    }
    ok_a = sk_store_claim_room_finish (a, rt_async_wait (&ra), &epoch_a, &ea);
    ok_b = sk_store_claim_room_finish (b, rt_async_wait (&rb), &epoch_b, &eb);
    g_assert_true (ok_a != ok_b);
    if (ok_a) {
      a_wins++;
      g_assert_cmpuint (epoch_a, ==, 1);
      g_assert_error (eb, SK_ERROR, SK_ERROR_CONFLICT);
    } else {
      g_assert_cmpuint (epoch_b, ==, 1);
      g_assert_error (ea, SK_ERROR, SK_ERROR_CONFLICT);
    }
    sk_store_get_placement_async (b, room, NULL, rt_async_cb, &rp);
    g_assert_true (
        sk_store_get_placement_finish (b, rt_async_wait (&rp), &node, NULL, &epoch, NULL));
    g_assert_cmpstr (node, ==, ok_a ? "na" : "nb");
    g_assert_cmpuint (epoch, ==, 1);
    rt_async_clear (&ra);
    rt_async_clear (&rb);
    rt_async_clear (&rp);
  }
  g_test_message ("claims won: a %u, b %u", a_wins, n_rooms - a_wins);
}

/* ---- Sentinel failover -------------------------------------------------------------------- */

static guint
tr_sentinel_replicas (int sentinel_port)
{
  redisReply *reply = tr_command (sentinel_port, "SENTINEL replicas mymaster");
  guint n = 0;

  if (reply != NULL && reply->type == REDIS_REPLY_ARRAY)
    n = reply->elements;
  if (reply != NULL)
    freeReplyObject (reply);
  return n;
}

static gboolean
tr_is_master (int port)
{
  redisReply *reply = tr_command (port, "ROLE");
  gboolean master = reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements > 0
                    && reply->element[0]->type == REDIS_REPLY_STRING
                    && strcmp (reply->element[0]->str, "master") == 0;

  if (reply != NULL)
    freeReplyObject (reply);
  return master;
}

/* Replicas the master lists in ROLE: only those done with their sync, the ones the store
 * counts when it decides to WAIT for a replica. */
static guint
tr_role_replicas (int port)
{
  redisReply *reply = tr_command (port, "ROLE");
  guint n = 0;

  if (reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 3
      && reply->element[2]->type == REDIS_REPLY_ARRAY)
    n = reply->element[2]->elements;
  if (reply != NULL)
    freeReplyObject (reply);
  return n;
}

static long long
tr_llen (int port, const char *key)
{
  redisReply *reply = tr_command (port, "LLEN %s", key);
  long long n = reply != NULL && reply->type == REDIS_REPLY_INTEGER ? reply->integer : -1;

  if (reply != NULL)
    freeReplyObject (reply);
  return n;
}

static void
test_sentinel_failover (void)
{
  TrServer master = { 0 }, replica = { 0 }, sentinel = { 0 };
  g_autoptr (SkStore) store = NULL;
  g_autoptr (GPtrArray) log = NULL;
  g_autoptr (GArray) acked = g_array_new (FALSE, FALSE, sizeof (guint64));
  g_autofree char *uri = NULL;
  g_autofree char *master_port = NULL;
  guint64 epoch = 0, seq = 0;
  guint after_kill = 0, refused = 0;
  gint64 killed_us, first_after_us = 0, deadline;
  RtAsync a = { 0 };

  if (!tr_have_redis ()) {
    g_test_skip ("redis-server is not installed");
    return;
  }
  tr_server_start (&master, NULL);
  master_port = g_strdup_printf ("%d", master.port);
  tr_server_start (&replica,
                   (const char *const[]){ "--replicaof", "127.0.0.1", master_port, NULL });
  tr_wait_info (replica.port, "replication", "master_link_status", "up");
  tr_sentinel_start (&sentinel, master.port, 1);
  deadline = g_get_monotonic_time () + 20 * G_USEC_PER_SEC;
  /* The replica's link can be up before the master takes it as online (its REPLCONF ACK), and
   * a store that connects in between sees 0 replicas and does not WAIT (seen in CI). */
  while (tr_sentinel_replicas (sentinel.port) < 1 || tr_role_replicas (master.port) < 1) {
    g_assert_cmpint (g_get_monotonic_time (), <, deadline);
    g_usleep (50 * 1000);
  }

  /* The first sentinel listed is not running: the store asks the next one. */
  uri = g_strdup_printf ("sentinel://127.0.0.1:%d,127.0.0.1:%d/mymaster", tr_free_port (),
                         sentinel.port);
  store = tr_store_new_uri (uri);
  tr_store_warm_up (store);

  sk_store_claim_room_async (store, "r", "n1", 1, 0, NULL, rt_async_cb, &a);
  g_assert_true (sk_store_claim_room_finish (store, rt_async_wait (&a), &epoch, NULL));
  rt_async_clear (&a);

  /* With a replica attached, an acknowledged append is already on the replica (WAIT 1). */
  for (seq = 1; seq <= 20; seq++) {
    g_assert_cmpint (tr_append (store, "r", epoch, seq), ==, -1);
    g_array_append_val (acked, seq);
    g_assert_cmpint (tr_llen (replica.port, "sk:log:r"), ==, (long long)seq);
  }

  tr_server_kill (&master);
  killed_us = g_get_monotonic_time ();

  /* Keep appending through the failover, as a room host would: retry what the store refused;
   * a conflict means an earlier attempt landed without its answer reaching us. */
  deadline = killed_us + 40 * G_USEC_PER_SEC;
  while (after_kill < 20) {
    int code = tr_append (store, "r", epoch, seq);

    g_assert_cmpint (g_get_monotonic_time (), <, deadline);
    if (code == -1) {
      if (first_after_us == 0)
        first_after_us = g_get_monotonic_time ();
      g_array_append_val (acked, seq);
      seq++;
      after_kill++;
    } else if (code == SK_ERROR_UNAVAILABLE) {
      refused++;
      rt_spin (50);
    } else {
      g_assert_cmpint (code, ==, SK_ERROR_CONFLICT);
      g_assert_cmpint (tr_last_seq (store, "r"), ==, (gint64)seq);
      seq++;
    }
  }
  g_test_message ("failover: first append %.2f s after the kill (%u refused meanwhile)",
                  (first_after_us - killed_us) / 1e6, refused);
  g_assert_true (tr_is_master (replica.port));

  /* Nothing acknowledged is lost, seq continued without gap, fencing still holds. */
  log = rt_read_log (store, "r");
  rt_assert_contiguous (log);
  g_assert_cmpuint (log->len, ==, seq - 1);
  for (guint i = 0; i < acked->len; i++) {
    guint64 s = g_array_index (acked, guint64, i);

    g_assert_cmpint (json_object_get_int_member (g_ptr_array_index (log, s - 1), "seq"), ==, s);
  }
  g_assert_cmpint (tr_append (store, "r", epoch - 1, seq), ==, SK_ERROR_STALE_EPOCH);

  g_clear_pointer (&store, sk_store_free);
  tr_server_clear (&sentinel);
  tr_server_clear (&replica);
  tr_server_clear (&master);
}

int
main (int argc, char **argv)
{
  int status;

  g_test_init (&argc, &argv, NULL);
  /* Losing Redis is a warning for operators; these tests cause it on purpose. */
  g_log_set_always_fatal (G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL);
  if (tr_have_redis ())
    tr_server_start (&contract_server, NULL);

  for (guint i = 0; i < G_N_ELEMENTS (sc_tests); i++) {
    g_autofree char *path = g_strdup_printf ("/store-redis/contract/%s", sc_tests[i].name);

    g_test_add_data_func (path, (gconstpointer)sc_tests[i].func, run_contract);
  }
  g_test_add_func ("/store-redis/uri", test_uri);
  g_test_add_func ("/store-redis/two-nodes-watch", test_two_nodes_watch);
  g_test_add_func ("/store-redis/concurrent-claims", test_concurrent_claims);
  g_test_add_func ("/store-redis/free-in-callback", test_free_in_callback);
  g_test_add_func ("/store-redis/reconnect", test_reconnect);
  g_test_add_func ("/store-redis/stalled", test_stalled);
  g_test_add_func ("/store-redis/sentinel-failover", test_sentinel_failover);
  status = g_test_run ();
  tr_server_clear (&contract_server);
  return status;
}
