/* Test helpers shared by the rooms/store/SSE/webhook unit tests. Header-only. */
#pragma once

#include <string.h>
#include <json-glib/json-glib.h>

#include "common/sk-common.h"
#include "common/sk-config.h"
#include "failover/sk-store.h"

/* Spins the main context until *@flag is set, failing the test after @timeout_ms. */
static inline void
rt_wait_flag (const gboolean *flag, guint timeout_ms)
{
  gint64 deadline = g_get_monotonic_time () + (gint64)timeout_ms * 1000;

  while (!*flag) {
    if (g_get_monotonic_time () > deadline)
      g_error ("timed out after %u ms", timeout_ms);
    /* Sleep only when idle: a busy stream dispatches many sources. */
    if (!g_main_context_iteration (NULL, FALSE))
      g_usleep (200);
  }
}

/* Spins the main context for @ms (lets timers and I/O run). */
static inline void
rt_spin (guint ms)
{
  gint64 end = g_get_monotonic_time () + (gint64)ms * 1000;

  while (g_get_monotonic_time () < end) {
    /* Sleep only when idle: a busy stream dispatches many sources. */
    if (!g_main_context_iteration (NULL, FALSE))
      g_usleep (200);
  }
}

/* Captures one GAsyncResult. */
typedef struct {
  GAsyncResult *result;
  gboolean done;
} RtAsync;

static inline void
rt_async_cb (GObject *source, GAsyncResult *result, gpointer user_data)
{
  RtAsync *a = user_data;

  a->result = g_object_ref (result);
  a->done = TRUE;
}

static inline GAsyncResult *
rt_async_wait (RtAsync *a)
{
  rt_wait_flag (&a->done, 5000);
  return a->result;
}

static inline void
rt_async_clear (RtAsync *a)
{
  g_clear_object (&a->result);
  a->done = FALSE;
}

static inline SkConfig *
rt_config_new (void)
{
  SkConfig *config = sk_config_new ();

  g_free (config->node_id);
  config->node_id = g_strdup ("n1");
  g_free (config->api_token);
  config->api_token = g_strdup ("test-token");
  config->room_empty_timeout_ms = 50;
  config->sse_keepalive_ms = 15000;
  return config;
}

/* The whole log of @room, parsed: a GPtrArray of JsonObject (each with "seq"). */
static inline GPtrArray *
rt_read_log (SkStore *store, const char *room)
{
  RtAsync a = { 0 };
  g_autoptr (GError) error = NULL;
  g_autoptr (GPtrArray) events = NULL;
  GPtrArray *objects = g_ptr_array_new_with_free_func ((GDestroyNotify)json_object_unref);

  sk_store_read_events_async (store, room, 0, G_MAXUINT, NULL, rt_async_cb, &a);
  events = sk_store_read_events_finish (store, rt_async_wait (&a), &error);
  g_assert_no_error (error);
  for (guint i = 0; i < events->len; i++) {
    SkStoreEvent *e = g_ptr_array_index (events, i);
    g_autoptr (JsonParser) parser = json_parser_new ();

    g_assert_true (json_parser_load_from_data (parser, e->json, -1, NULL));
    g_assert_true (JSON_NODE_HOLDS_OBJECT (json_parser_get_root (parser)));
    g_assert_cmpint (
        json_object_get_int_member (json_node_get_object (json_parser_get_root (parser)), "seq"),
        ==, e->seq);
    g_ptr_array_add (objects,
                     json_object_ref (json_node_get_object (json_parser_get_root (parser))));
  }
  rt_async_clear (&a);
  return objects;
}

/* "RoomStarted,ParticipantConnected,…" for a log, to compare sequences in one assertion. */
static inline char *
rt_event_names (GPtrArray *log, guint from)
{
  GString *s = g_string_new (NULL);

  for (guint i = from; i < log->len; i++) {
    JsonObject *o = g_ptr_array_index (log, i);

    if (s->len > 0)
      g_string_append_c (s, ',');
    g_string_append (s, json_object_get_string_member (o, "event"));
  }
  return g_string_free (s, FALSE);
}

/* Invariant 1: seq is 1, 2, 3, … with no gap or duplicate. */
static inline void
rt_assert_contiguous (GPtrArray *log)
{
  for (guint i = 0; i < log->len; i++)
    g_assert_cmpint (json_object_get_int_member (g_ptr_array_index (log, i), "seq"), ==, i + 1);
}
