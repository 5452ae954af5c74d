/*
 * The state-store contract (failover/sk-store.h), one body per behaviour, each taking the
 * store under test: tests/unit/rooms/test-store.c runs them on the memory backend and
 * tests/unit/failover/test-store-redis.c on Redis. Header-only; include once per test binary.
 */
#pragma once

#include "../rooms/rooms-test-util.h"

/* How long a test listens to make sure that nothing is notified (pub/sub is asynchronous). */
#define SC_QUIET_MS 100

typedef struct {
  guint calls;
  guint64 last_seq;
  char *room;
  gboolean destroyed;
} WatchLog;

static void
on_watch (const char *room, guint64 last_seq, gpointer user_data)
{
  WatchLog *w = user_data;

  w->calls++;
  w->last_seq = last_seq;
  g_free (w->room);
  w->room = g_strdup (room);
}

static void
on_watch_destroy (gpointer user_data)
{
  ((WatchLog *)user_data)->destroyed = TRUE;
}

/* Spins until @w has seen @seq (notifications travel through the backend). */
static inline void
sc_wait_seq (WatchLog *w, guint64 seq)
{
  gint64 deadline = g_get_monotonic_time () + 5 * G_USEC_PER_SEC;

  while (w->last_seq < seq) {
    if (g_get_monotonic_time () > deadline)
      g_error ("watch: still at seq %" G_GUINT64_FORMAT ", waiting for %" G_GUINT64_FORMAT,
               w->last_seq, seq);
    if (!g_main_context_iteration (NULL, FALSE))
      g_usleep (200);
  }
}

static G_GNUC_UNUSED gboolean
store_append (SkStore *store, const char *room, guint64 epoch, guint64 seq, GError **error)
{
  RtAsync a = { 0 };
  g_autofree char *json = g_strdup_printf ("{\"seq\":%" G_GUINT64_FORMAT "}", seq);
  gboolean ok;

  sk_store_append_event_async (store, room, epoch, seq, json, NULL, rt_async_cb, &a);
  ok = sk_store_append_event_finish (store, rt_async_wait (&a), error);
  rt_async_clear (&a);
  return ok;
}

static guint64
store_claim (SkStore *store, const char *room, const char *node, guint64 expected, GError **error)
{
  RtAsync a = { 0 };
  guint64 epoch = 0;

  sk_store_claim_room_async (store, room, node, 0, expected, NULL, rt_async_cb, &a);
  if (!sk_store_claim_room_finish (store, rt_async_wait (&a), &epoch, error))
    epoch = 0;
  rt_async_clear (&a);
  return epoch;
}

static guint64
store_last_seq (SkStore *store, const char *room)
{
  RtAsync a = { 0 };
  g_autoptr (GError) error = NULL;
  guint64 seq = G_MAXUINT64;

  sk_store_last_seq_async (store, room, NULL, rt_async_cb, &a);
  g_assert_true (sk_store_last_seq_finish (store, rt_async_wait (&a), &seq, &error));
  g_assert_no_error (error);
  rt_async_clear (&a);
  return seq;
}

/* Appends are fenced by the placement epoch and must extend the log by exactly one. */
static void
sc_fencing (SkStore *store)
{
  g_autoptr (GError) error = NULL;

  g_assert_cmpuint (store_last_seq (store, "r"), ==, 0);
  g_assert_cmpuint (store_claim (store, "r", "n1", 0, &error), ==, 1);
  g_assert_no_error (error);
  g_assert_true (store_append (store, "r", 1, 1, &error));
  g_assert_true (store_append (store, "r", 1, 2, &error));

  /* Not last + 1: a duplicate and a gap are both conflicts. */
  g_assert_false (store_append (store, "r", 1, 2, &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_CONFLICT);
  g_clear_error (&error);
  g_assert_false (store_append (store, "r", 1, 4, &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_CONFLICT);
  g_clear_error (&error);

  /* n2 takes the room over: n1's epoch is now stale, even with the right seq. */
  g_assert_cmpuint (store_claim (store, "r", "n2", 1, &error), ==, 2);
  g_assert_false (store_append (store, "r", 1, 3, &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_STALE_EPOCH);
  g_clear_error (&error);
  g_assert_true (store_append (store, "r", 2, 3, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (store_last_seq (store, "r"), ==, 3);
}

static void
sc_claim_cas (SkStore *store)
{
  g_autoptr (GError) error = NULL;
  g_autofree char *node = NULL;
  RtAsync a = { 0 };
  RtAsync b = { 0 };
  guint64 epoch = 99, e1 = 0, e2 = 0;
  gboolean ok1, ok2;

  sk_store_get_placement_async (store, "r", NULL, rt_async_cb, &a);
  g_assert_true (
      sk_store_get_placement_finish (store, rt_async_wait (&a), &node, NULL, &epoch, &error));
  g_assert_null (node);
  g_assert_cmpuint (epoch, ==, 0);
  rt_async_clear (&a);

  /* Two claimants with the same expectation: exactly one wins. */
  sk_store_claim_room_async (store, "r", "n1", 0, 0, NULL, rt_async_cb, &a);
  sk_store_claim_room_async (store, "r", "n2", 0, 0, NULL, rt_async_cb, &b);
  ok1 = sk_store_claim_room_finish (store, rt_async_wait (&a), &e1, NULL);
  ok2 = sk_store_claim_room_finish (store, rt_async_wait (&b), &e2, &error);
  g_assert_true (ok1);
  g_assert_cmpuint (e1, ==, 1);
  g_assert_false (ok2);
  g_assert_error (error, SK_ERROR, SK_ERROR_CONFLICT);
  g_clear_error (&error);
  rt_async_clear (&a);
  rt_async_clear (&b);

  sk_store_get_placement_async (store, "r", NULL, rt_async_cb, &a);
  g_assert_true (
      sk_store_get_placement_finish (store, rt_async_wait (&a), &node, NULL, &epoch, &error));
  g_assert_cmpstr (node, ==, "n1");
  g_assert_cmpuint (epoch, ==, 1);
  rt_async_clear (&a);
}

static void
sc_read (SkStore *store)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) events = NULL;
  RtAsync a = { 0 };

  for (guint64 seq = 1; seq <= 10; seq++)
    g_assert_true (store_append (store, "r", 0, seq, NULL));

  sk_store_read_events_async (store, "r", 4, 3, NULL, rt_async_cb, &a);
  events = sk_store_read_events_finish (store, rt_async_wait (&a), &error);
  g_assert_no_error (error);
  g_assert_cmpuint (events->len, ==, 3);
  for (guint i = 0; i < 3; i++) {
    SkStoreEvent *e = g_ptr_array_index (events, i);
    g_autofree char *expected = g_strdup_printf ("{\"seq\":%u}", 5 + i);

    g_assert_cmpuint (e->seq, ==, 5 + i);
    g_assert_cmpstr (e->json, ==, expected);
  }
  g_clear_pointer (&events, g_ptr_array_unref);
  rt_async_clear (&a);

  /* After the end, and an unknown room: nothing, not an error. */
  sk_store_read_events_async (store, "r", 10, 100, NULL, rt_async_cb, &a);
  events = sk_store_read_events_finish (store, rt_async_wait (&a), &error);
  g_assert_cmpuint (events->len, ==, 0);
  g_clear_pointer (&events, g_ptr_array_unref);
  rt_async_clear (&a);
  sk_store_read_events_async (store, "nope", 0, 100, NULL, rt_async_cb, &a);
  events = sk_store_read_events_finish (store, rt_async_wait (&a), &error);
  g_assert_no_error (error);
  g_assert_cmpuint (events->len, ==, 0);
  rt_async_clear (&a);
}

/* Completion never re-enters the caller: the callback runs from the main loop, later. */
static void
sc_not_reentrant (SkStore *store)
{
  RtAsync a = { 0 };

  sk_store_append_event_async (store, "r", 0, 1, "{}", NULL, rt_async_cb, &a);
  g_assert_false (a.done);
  g_assert_true (sk_store_append_event_finish (store, rt_async_wait (&a), NULL));
  rt_async_clear (&a);
}

static void
sc_watch (SkStore *store)
{
  WatchLog w = { 0 }, other = { 0 };
  guint id, other_id;
  RtAsync a = { 0 };

  id = sk_store_watch_events (store, "r", on_watch, &w, on_watch_destroy);
  other_id = sk_store_watch_events (store, "elsewhere", on_watch, &other, NULL);
  g_assert_cmpuint (id, >, 0);

  for (guint64 seq = 1; seq <= 3; seq++)
    sk_store_append_event_async (store, "r", 0, seq, "{}", NULL, NULL, NULL);
  /* Not from inside the append calls. */
  g_assert_cmpuint (w.calls, ==, 0);
  sc_wait_seq (&w, 3);
  g_assert_cmpuint (w.calls, >=, 1);
  g_assert_cmpuint (w.last_seq, ==, 3);
  g_assert_cmpstr (w.room, ==, "r");
  g_assert_cmpuint (other.calls, ==, 0);

  /* A failed append does not notify. */
  w.calls = 0;
  sk_store_append_event_async (store, "r", 0, 9, "{}", NULL, rt_async_cb, &a);
  g_assert_false (sk_store_append_event_finish (store, rt_async_wait (&a), NULL));
  rt_async_clear (&a);
  rt_spin (SC_QUIET_MS);
  g_assert_cmpuint (w.calls, ==, 0);

  sk_store_unwatch_events (store, id);
  g_assert_true (w.destroyed);
  sk_store_append_event_async (store, "r", 0, 4, "{}", NULL, NULL, NULL);
  rt_spin (SC_QUIET_MS);
  g_assert_cmpuint (w.calls, ==, 0);
  sk_store_unwatch_events (store, other_id);
  g_free (w.room);
}

static void
sc_namespaces (SkStore *store)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) values = NULL;
  g_autofree char *value = NULL;
  RtAsync a = { 0 };

  sk_store_put_async (store, "ingress", "b", "2", NULL, NULL, NULL);
  sk_store_put_async (store, "ingress", "a", "1", NULL, NULL, NULL);
  sk_store_put_async (store, "ingress", "a", "1bis", NULL, NULL, NULL);
  sk_store_put_async (store, "keys", "a", "other", NULL, rt_async_cb, &a);
  g_assert_true (sk_store_put_finish (store, rt_async_wait (&a), &error));
  rt_async_clear (&a);

  sk_store_get_async (store, "ingress", "a", NULL, rt_async_cb, &a);
  value = sk_store_get_finish (store, rt_async_wait (&a), &error);
  g_assert_no_error (error);
  g_assert_cmpstr (value, ==, "1bis");
  rt_async_clear (&a);

  sk_store_list_async (store, "ingress", NULL, rt_async_cb, &a);
  values = sk_store_list_finish (store, rt_async_wait (&a), &error);
  g_assert_cmpuint (values->len, ==, 2);
  g_assert_cmpstr (g_ptr_array_index (values, 0), ==, "1bis");
  g_assert_cmpstr (g_ptr_array_index (values, 1), ==, "2");
  g_clear_pointer (&values, g_ptr_array_unref);
  rt_async_clear (&a);

  sk_store_remove_async (store, "ingress", "a", NULL, rt_async_cb, &a);
  g_assert_true (sk_store_remove_finish (store, rt_async_wait (&a), &error));
  rt_async_clear (&a);
  sk_store_get_async (store, "ingress", "a", NULL, rt_async_cb, &a);
  g_assert_null (sk_store_get_finish (store, rt_async_wait (&a), &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_NOT_FOUND);
  g_clear_error (&error);
  rt_async_clear (&a);

  sk_store_list_async (store, "empty", NULL, rt_async_cb, &a);
  values = sk_store_list_finish (store, rt_async_wait (&a), &error);
  g_assert_no_error (error);
  g_assert_cmpuint (values->len, ==, 0);
  rt_async_clear (&a);
}

/* The log keeps the newest 10000 events; a read from before the window gets what is left. */
static void
sc_log_cap (SkStore *store)
{
  g_autoptr (GPtrArray) events = NULL;
  RtAsync a = { 0 };
  const guint total = 10000 + 25;

  for (guint64 seq = 1; seq <= total; seq++)
    sk_store_append_event_async (store, "r", 0, seq, "{}", NULL, NULL, NULL);
  g_assert_cmpuint (store_last_seq (store, "r"), ==, total);

  sk_store_read_events_async (store, "r", 0, G_MAXUINT, NULL, rt_async_cb, &a);
  events = sk_store_read_events_finish (store, rt_async_wait (&a), NULL);
  g_assert_cmpuint (events->len, ==, 10000);
  g_assert_cmpuint (((SkStoreEvent *)g_ptr_array_index (events, 0))->seq, ==, 26);
  g_assert_cmpuint (((SkStoreEvent *)g_ptr_array_index (events, 9999))->seq, ==, total);
  g_clear_pointer (&events, g_ptr_array_unref);
  rt_async_clear (&a);

  /* Inside the window the ring still reads in order. */
  sk_store_read_events_async (store, "r", 5000, 3, NULL, rt_async_cb, &a);
  events = sk_store_read_events_finish (store, rt_async_wait (&a), NULL);
  g_assert_cmpuint (events->len, ==, 3);
  g_assert_cmpuint (((SkStoreEvent *)g_ptr_array_index (events, 0))->seq, ==, 5001);
  g_assert_cmpuint (((SkStoreEvent *)g_ptr_array_index (events, 2))->seq, ==, 5003);
  rt_async_clear (&a);
}

static guint64
store_join (SkStore *store, const char *node, guint ttl_ms)
{
  RtAsync a = { 0 };
  g_autoptr (GError) error = NULL;
  guint64 incarnation = 0;

  sk_store_join_node_async (store, node, "{}", ttl_ms, NULL, rt_async_cb, &a);
  g_assert_true (sk_store_join_node_finish (store, rt_async_wait (&a), &incarnation, &error));
  g_assert_no_error (error);
  rt_async_clear (&a);
  return incarnation;
}

static gboolean
store_renew (SkStore *store, const char *node, guint64 incarnation, guint ttl_ms, GError **error)
{
  RtAsync a = { 0 };
  gboolean ok;

  sk_store_renew_node_async (store, node, incarnation, "{\"load\":1}", ttl_ms, NULL, rt_async_cb,
                             &a);
  ok = sk_store_renew_node_finish (store, rt_async_wait (&a), error);
  rt_async_clear (&a);
  return ok;
}

static gboolean
store_retire (SkStore *store, const char *node, guint64 incarnation, gboolean force, GError **error)
{
  RtAsync a = { 0 };
  gboolean ok;

  sk_store_retire_node_async (store, node, incarnation, force, NULL, rt_async_cb, &a);
  ok = sk_store_retire_node_finish (store, rt_async_wait (&a), error);
  rt_async_clear (&a);
  return ok;
}

static GPtrArray *
store_nodes (SkStore *store)
{
  RtAsync a = { 0 };
  g_autoptr (GError) error = NULL;
  GPtrArray *nodes;

  sk_store_list_nodes_async (store, NULL, rt_async_cb, &a);
  nodes = sk_store_list_nodes_finish (store, rt_async_wait (&a), &error);
  g_assert_no_error (error);
  rt_async_clear (&a);
  return nodes;
}

/* Leases expire, a retired incarnation cannot renew, a lease lost without retirement (a store
 * that failed over) comes back on renewal, and a rejoin is a new incarnation. */
static void
sc_membership (SkStore *store)
{
  g_autoptr (GError) error = NULL;
  guint64 n1 = store_join (store, "n1", 100000);
  guint64 n2 = store_join (store, "n2", 50);

  g_assert_cmpuint (n1, ==, 1);
  g_assert_cmpuint (n2, ==, 1);
  {
    g_autoptr (GPtrArray) nodes = store_nodes (store);
    g_assert_cmpuint (nodes->len, ==, 2);
    SkStoreNode *first = g_ptr_array_index (nodes, 0);
    g_assert_cmpstr (first->node, ==, "n1");
    g_assert_cmpstr (first->info, ==, "{}");
  }

  /* A live lease cannot be retired by a survivor. */
  g_assert_false (store_retire (store, "n1", n1, FALSE, &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_CONFLICT);
  g_clear_error (&error);

  g_usleep (80 * 1000);
  {
    g_autoptr (GPtrArray) nodes = store_nodes (store);
    g_assert_cmpuint (nodes->len, ==, 1);
  }
  /* Expired but not retired: renewal re-creates the lease. */
  g_assert_true (store_renew (store, "n2", n2, 100000, &error));
  g_assert_no_error (error);
  {
    g_autoptr (GPtrArray) nodes = store_nodes (store);
    g_assert_cmpuint (nodes->len, ==, 2);
    g_assert_cmpstr (((SkStoreNode *)g_ptr_array_index (nodes, 1))->info, ==, "{\"load\":1}");
  }

  /* Forced retirement (clean leave), then the stale incarnation is refused. */
  g_assert_true (store_retire (store, "n2", n2, TRUE, &error));
  g_assert_true (store_retire (store, "n2", n2, FALSE, &error)); /* already dead: fine */
  g_assert_false (store_renew (store, "n2", n2, 100000, &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_STALE_EPOCH);
  g_clear_error (&error);
  g_assert_cmpuint (store_join (store, "n2", 100000), >, n2 + 0);
}

static void
sc_placements (SkStore *store)
{
  g_autoptr (GError) error = NULL;
  RtAsync a = { 0 };
  g_autoptr (GPtrArray) placements = NULL;
  guint64 e;

  RtAsync c = { 0 };
  sk_store_claim_room_async (store, "b", "n2", 7, 0, NULL, rt_async_cb, &c);
  g_assert_true (sk_store_claim_room_finish (store, rt_async_wait (&c), &e, &error));
  rt_async_clear (&c);
  g_assert_cmpuint (store_claim (store, "a", "n1", 0, &error), ==, 1);
  g_assert_cmpuint (store_claim (store, "c", "n1", 0, &error), ==, 1);

  /* Released rooms are not listed and keep their epoch. */
  sk_store_release_room_async (store, "c", 1, NULL, rt_async_cb, &a);
  g_assert_true (sk_store_release_room_finish (store, rt_async_wait (&a), &error));
  rt_async_clear (&a);
  sk_store_release_room_async (store, "a", 5, NULL, rt_async_cb, &a);
  g_assert_false (sk_store_release_room_finish (store, rt_async_wait (&a), &error));
  g_assert_error (error, SK_ERROR, SK_ERROR_CONFLICT);
  g_clear_error (&error);
  rt_async_clear (&a);
  g_assert_cmpuint (store_claim (store, "c", "n3", 1, &error), ==, 2);
  g_assert_no_error (error);

  sk_store_list_placements_async (store, NULL, rt_async_cb, &a);
  placements = sk_store_list_placements_finish (store, rt_async_wait (&a), &error);
  rt_async_clear (&a);
  g_assert_no_error (error);
  g_assert_cmpuint (placements->len, ==, 3);
  SkStorePlacement *b = g_ptr_array_index (placements, 1);
  g_assert_cmpstr (b->room, ==, "b");
  g_assert_cmpstr (b->node, ==, "n2");
  g_assert_cmpuint (b->incarnation, ==, 7);
  g_assert_cmpuint (b->epoch, ==, 1);
  SkStorePlacement *pc = g_ptr_array_index (placements, 2);
  g_assert_cmpstr (pc->node, ==, "n3");
  g_assert_cmpuint (pc->epoch, ==, 2);
}

typedef void (*ScTestFunc) (SkStore *store);

/* The contract's cases, for a runner to register under its own prefix. */
static const struct {
  const char *name;
  ScTestFunc func;
} sc_tests[] = {
  { "fencing", sc_fencing },
  { "claim-cas", sc_claim_cas },
  { "read", sc_read },
  { "not-reentrant", sc_not_reentrant },
  { "watch", sc_watch },
  { "namespaces", sc_namespaces },
  { "log-cap", sc_log_cap },
  { "membership", sc_membership },
  { "placements", sc_placements },
};
