/*
 * streamkeeper: Server-Sent Events for a room's log (GET /v1/rooms/{room}/events).
 *
 * Each client is a cursor into the log in the store: it reads a batch after its cursor,
 * frames it, and reads again when the store says the log grew. Frames go out as chunks of a
 * chunked response; libsoup pauses the message when it runs out of chunks and we unpause it
 * after appending one.
 *
 * Memory per client is bounded: the next batch is read only while less than
 * SSE_BACKLOG_LOW bytes wait to be written, a client with data waiting that has not taken a
 * single byte for a whole keep-alive period is dropped, and SSE_BACKLOG_MAX is a hard cap.
 * A dropped client reconnects with Last-Event-ID and loses nothing.
 */
#include "rooms/sk-events-http.h"

#include <string.h>

#include "common/sk-common.h"
#include "common/sk-http.h"

#define SSE_READ_BATCH 128
#define SSE_BACKLOG_LOW (64 * 1024)
#define SSE_BACKLOG_MAX (2 * 1024 * 1024)
#define SSE_RETRY_MS 2000

struct _SkEventsHttp {
  SkStore *store;
  const SkConfig *config;
  GHashTable *clients; /* SseClient* set */

  /* Shutdown: set while open streams get the rest of their log before they end. */
  gboolean draining;
  GSourceFunc drained;
  gpointer drained_data;
  guint drain_timeout_id;
};

typedef struct {
  SkEventsHttp *owner;
  SoupServerMessage *msg;
  char *room;
  guint64 cursor; /* seq of the last event sent */
  guint watch_id;
  guint keepalive_id;
  GCancellable *cancellable;
  gboolean reading; /* a store read is in flight */
  gboolean more;    /* the log may hold events after the cursor that were not read yet */
  gsize queued;     /* bytes appended to the body and not yet written to the socket */
  guint64 written;  /* bytes written so far */
  guint64 written_at_tick;
  gboolean closing;
} SseClient;

static void client_read (SseClient *c);
static void client_end (SseClient *c);

static void
drain_done (SkEventsHttp *self)
{
  GSourceFunc drained = g_steal_pointer (&self->drained);

  g_clear_handle_id (&self->drain_timeout_id, g_source_remove);
  if (drained != NULL)
    drained (self->drained_data);
}

static gboolean
on_drain_timeout_idle (gpointer user_data)
{
  SkEventsHttp *self = user_data;

  self->drain_timeout_id = 0;
  drain_done (self);
  return G_SOURCE_REMOVE;
}

static gboolean
on_drain_timeout (gpointer user_data)
{
  SkEventsHttp *self = user_data;

  self->drain_timeout_id = 0;
  g_warning ("shutdown: %u SSE streams did not take the end of their log in time",
             g_hash_table_size (self->clients));
  drain_done (self);
  return G_SOURCE_REMOVE;
}

static void
client_free (SseClient *c)
{
  g_cancellable_cancel (c->cancellable);
  g_object_unref (c->cancellable);
  sk_store_unwatch_events (c->owner->store, c->watch_id);
  g_clear_handle_id (&c->keepalive_id, g_source_remove);
  g_signal_handlers_disconnect_by_data (c->msg, c);
  g_object_unref (c->msg);
  g_free (c->room);
  g_free (c);
}

/* The response is over (written completely, or the peer went away): forget the client. */
static void
on_finished (SoupServerMessage *msg, SseClient *c)
{
  SkEventsHttp *self = c->owner;

  g_debug ("SSE client of room %s gone at seq %" G_GUINT64_FORMAT, c->room, c->cursor);
  g_hash_table_remove (self->clients, c);
  if (self->draining && g_hash_table_size (self->clients) == 0)
    drain_done (self);
}

static void
on_wrote_body_data (SoupServerMessage *msg, guint n, SseClient *c)
{
  c->queued -= MIN (c->queued, n);
  c->written += n;
  if (c->more && c->queued < SSE_BACKLOG_LOW)
    client_read (c);
}

/* Ends the response cleanly: the terminating chunk is written after what is queued. */
static void
client_end (SseClient *c)
{
  if (c->closing)
    return;
  c->closing = TRUE;
  g_cancellable_cancel (c->cancellable);
  soup_message_body_complete (soup_server_message_get_response_body (c->msg));
  soup_server_message_unpause (c->msg);
}

/* Drops a client that does not read: shutting the socket down makes libsoup's pending write
 * fail, which finishes the message (and so frees the client) from the main loop. */
static void
client_drop (SseClient *c, const char *why)
{
  GSocket *socket = soup_server_message_get_socket (c->msg);

  if (c->closing)
    return;
  g_message ("SSE client of room %s dropped: %s (%" G_GSIZE_FORMAT " bytes unsent)", c->room, why,
             c->queued);
  c->closing = TRUE;
  g_cancellable_cancel (c->cancellable);
  if (socket != NULL)
    g_socket_shutdown (socket, TRUE, TRUE, NULL);
  soup_server_message_unpause (c->msg);
}

static void
client_write (SseClient *c, const char *data, gsize len)
{
  if (c->closing)
    return;
  if (c->queued + len > SSE_BACKLOG_MAX) {
    client_drop (c, "backlog limit");
    return;
  }
  soup_message_body_append (soup_server_message_get_response_body (c->msg), SOUP_MEMORY_COPY, data,
                            len);
  c->queued += len;
  soup_server_message_unpause (c->msg);
}

/* The "event" member of a stored event, if it is a safe SSE field value. */
static char *
event_name_of (const char *json)
{
  g_autoptr (JsonParser) parser = json_parser_new ();
  JsonNode *root;
  const char *name;

  if (!json_parser_load_from_data (parser, json, -1, NULL))
    return NULL;
  root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    return NULL;
  name = json_object_get_string_member_with_default (json_node_get_object (root), "event", NULL);
  if (name == NULL || name[0] == '\0' || strpbrk (name, "\r\n") != NULL)
    return NULL;
  return g_strdup (name);
}

static void
client_write_event (SseClient *c, const SkStoreEvent *event)
{
  g_autoptr (GString) frame = g_string_sized_new (strlen (event->json) + 64);
  g_autofree char *name = event_name_of (event->json);
  g_auto (GStrv) lines = NULL;

  g_string_append_printf (frame, "id: %" G_GUINT64_FORMAT "\n", event->seq);
  if (name != NULL)
    g_string_append_printf (frame, "event: %s\n", name);
  /* Compact JSON has no newline, but a multi-line value must stay one SSE data field. */
  lines = g_strsplit_set (event->json, "\r\n", -1);
  for (guint i = 0; lines[i] != NULL; i++) {
    if (lines[i][0] != '\0' || lines[i + 1] == NULL)
      g_string_append_printf (frame, "data: %s\n", lines[i]);
  }
  g_string_append_c (frame, '\n');
  client_write (c, frame->str, frame->len);
}

static void
on_read (GObject *source, GAsyncResult *result, gpointer user_data)
{
  GCancellable *cancellable = g_task_get_cancellable (G_TASK (result));
  g_autoptr (GPtrArray) events = NULL;
  g_autoptr (GError) error = NULL;
  SseClient *c;

  /* Cancelled means the client is gone or going: it may already be freed. */
  if (g_cancellable_is_cancelled (cancellable))
    return;
  c = user_data;
  c->reading = FALSE;

  events = sk_store_read_events_finish (c->owner->store, result, &error);
  if (events == NULL) {
    g_warning ("SSE room %s: reading the log failed: %s", c->room, error->message);
    client_end (c);
    return;
  }

  for (guint i = 0; i < events->len; i++) {
    SkStoreEvent *event = g_ptr_array_index (events, i);

    if (event->seq <= c->cursor)
      continue;
    if (event->seq > c->cursor + 1) {
      g_autofree char *gap = g_strdup_printf (": events %" G_GUINT64_FORMAT "-%" G_GUINT64_FORMAT
                                              " are no longer kept in the log\n\n",
                                              c->cursor + 1, event->seq - 1);

      client_write (c, gap, strlen (gap));
    }
    client_write_event (c, event);
    c->cursor = event->seq;
  }
  if (events->len == SSE_READ_BATCH)
    c->more = TRUE;
  if (c->more)
    client_read (c);
  else if (c->owner->draining)
    client_end (c); /* the whole log has been queued: the stream can end */
}

static void
client_read (SseClient *c)
{
  if (c->closing)
    return;
  c->more = TRUE;
  /* The read in flight may have been answered before the log grew: on_read reads again. */
  if (c->reading)
    return;
  /* Flow control: wait for the socket to take what is queued (on_wrote_body_data). */
  if (c->queued >= SSE_BACKLOG_LOW)
    return;
  c->more = FALSE;
  c->reading = TRUE;
  sk_store_read_events_async (c->owner->store, c->room, c->cursor, SSE_READ_BATCH, c->cancellable,
                              on_read, c);
}

static void
on_log_grew (const char *room, guint64 last_seq, gpointer user_data)
{
  SseClient *c = user_data;

  if (last_seq > c->cursor)
    client_read (c);
}

static gboolean
keepalive_cb (gpointer user_data)
{
  SseClient *c = user_data;
  static const char keepalive[] = ": keepalive\n\n";

  if (c->queued > 0 && c->written == c->written_at_tick) {
    c->keepalive_id = 0;
    client_drop (c, "not reading");
    return G_SOURCE_REMOVE;
  }
  c->written_at_tick = c->written;
  if (c->queued < SSE_BACKLOG_LOW)
    client_write (c, keepalive, sizeof keepalive - 1);
  return G_SOURCE_CONTINUE;
}

/* Where to resume: Last-Event-ID wins over ?since=; both mean "events after this seq". */
static gboolean
parse_resume_point (SoupServerMessage *msg, GHashTable *params, guint64 *out, GError **error)
{
  const char *value = soup_message_headers_get_one (soup_server_message_get_request_headers (msg),
                                                    "Last-Event-ID");
  const char *what = "Last-Event-ID";
  g_autofree char *trimmed = NULL;

  if (value == NULL && params != NULL) {
    value = g_hash_table_lookup (params, "since");
    what = "since";
  }
  *out = 0;
  if (value == NULL)
    return TRUE;
  trimmed = g_strstrip (g_strdup (value));
  if (trimmed[0] == '\0')
    return TRUE; /* EventSource sends an empty id when it has seen none */
  if (!g_ascii_string_to_unsigned (trimmed, 10, 0, G_MAXUINT64, out, NULL)) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "%s must be a sequence number", what);
    return FALSE;
  }
  return TRUE;
}

static gboolean
check_token (SkEventsHttp *self, SoupServerMessage *msg, GHashTable *params)
{
  const char *query_token = params != NULL ? g_hash_table_lookup (params, "token") : NULL;
  const char *api_token = self->config->api_token;

  /* EventSource cannot set headers, so the token may come in the query instead. */
  if (sk_http_get_bearer (msg) == NULL && query_token != NULL) {
    if (api_token != NULL && api_token[0] != '\0' && sk_secure_equal (query_token, api_token))
      return TRUE;
    sk_http_reply_error (msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized", "wrong token");
    return FALSE;
  }
  return sk_http_require_token (msg, api_token);
}

void
sk_events_http_handle (SkEventsHttp *self, SoupServerMessage *msg, const char *room)
{
  const char *query = g_uri_get_query (soup_server_message_get_uri (msg));
  g_autoptr (GHashTable) params = NULL;
  g_autoptr (GError) error = NULL;
  SoupMessageHeaders *headers = soup_server_message_get_response_headers (msg);
  SoupMessageBody *body = soup_server_message_get_response_body (msg);
  guint64 since = 0;
  g_autofree char *preamble = NULL;
  SseClient *c;

  if (query != NULL) {
    params = g_uri_parse_params (query, -1, "&", G_URI_PARAMS_NONE, &error);
    if (params == NULL) {
      sk_http_reply_gerror (msg, error);
      return;
    }
  }
  if (!check_token (self, msg, params))
    return;
  if (self->draining) {
    sk_http_reply_error (msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "unavailable",
                         "the node is shutting down");
    return;
  }
  if (!parse_resume_point (msg, params, &since, &error)) {
    sk_http_reply_gerror (msg, error);
    return;
  }

  c = g_new0 (SseClient, 1);
  c->owner = self;
  c->msg = g_object_ref (msg);
  c->room = g_strdup (room);
  c->cursor = since;
  c->cancellable = g_cancellable_new ();
  g_hash_table_add (self->clients, c);

  soup_server_message_set_status (msg, SOUP_STATUS_OK, NULL);
  soup_message_headers_set_content_type (headers, "text/event-stream", NULL);
  soup_message_headers_replace (headers, "Cache-Control", "no-cache");
  soup_message_headers_replace (headers, "X-Accel-Buffering", "no"); /* proxies: do not buffer */
  sk_http_add_cors (msg, "GET");
  soup_message_headers_set_encoding (
      headers, soup_server_message_get_http_version (msg) == SOUP_HTTP_1_0 ? SOUP_ENCODING_EOF
                                                                           : SOUP_ENCODING_CHUNKED);
  /* Written chunks are dropped instead of kept for a body nobody will read. */
  soup_message_body_set_accumulate (body, FALSE);
  g_signal_connect (msg, "wrote-body-data", G_CALLBACK (on_wrote_body_data), c);
  g_signal_connect (msg, "finished", G_CALLBACK (on_finished), c);

  /* Sent at once so the client sees the headers even before the room has any event. */
  preamble = g_strdup_printf ("retry: %d\n\n", SSE_RETRY_MS);
  client_write (c, preamble, strlen (preamble));

  /* Watch before the first read, so an append between the two is not missed. */
  c->watch_id = sk_store_watch_events (self->store, room, on_log_grew, c, NULL);
  if (self->config->sse_keepalive_ms > 0)
    c->keepalive_id = g_timeout_add (self->config->sse_keepalive_ms, keepalive_cb, c);
  client_read (c);
}

SkEventsHttp *
sk_events_http_new (SkStore *store, const SkConfig *config)
{
  SkEventsHttp *self = g_new0 (SkEventsHttp, 1);

  self->store = store;
  self->config = config;
  self->clients = g_hash_table_new_full (NULL, NULL, (GDestroyNotify)client_free, NULL);
  return self;
}

void
sk_events_http_free (SkEventsHttp *self)
{
  GHashTableIter iter;
  SseClient *c;

  if (self == NULL)
    return;
  /* End each stream cleanly; the messages outlive us in libsoup, our handlers do not. */
  g_hash_table_iter_init (&iter, self->clients);
  while (g_hash_table_iter_next (&iter, (gpointer *)&c, NULL)) {
    g_signal_handlers_disconnect_by_data (c->msg, c);
    client_end (c);
  }
  g_hash_table_unref (self->clients);
  drain_done (self); /* a shutdown still waiting is told now rather than never */
  g_free (self);
}

void
sk_events_http_drain (SkEventsHttp *self, guint timeout_ms, GSourceFunc done, gpointer user_data)
{
  g_autoptr (GPtrArray) clients = g_ptr_array_new ();
  GHashTableIter iter;
  gpointer c;

  g_return_if_fail (!self->draining);
  self->draining = TRUE;
  self->drained = done;
  self->drained_data = user_data;
  /* A copy: client_read may end (and so remove) a client. */
  g_hash_table_iter_init (&iter, self->clients);
  while (g_hash_table_iter_next (&iter, &c, NULL))
    g_ptr_array_add (clients, c);
  if (clients->len == 0) {
    self->drain_timeout_id = g_idle_add (on_drain_timeout_idle, self);
    return;
  }
  self->drain_timeout_id = g_timeout_add (timeout_ms, on_drain_timeout, self);
  /* A read in flight ends its stream when it completes; the others read what is left now. */
  for (guint i = 0; i < clients->len; i++) {
    SseClient *client = g_ptr_array_index (clients, i);

    if (!client->reading)
      client_read (client);
  }
}

guint
sk_events_http_get_n_clients (SkEventsHttp *self)
{
  return g_hash_table_size (self->clients);
}
