/*
 * streamkeeper: fast detection of a dead node process (see sk-peers.h).
 *
 * A watch is one peer node's incarnation: request → read until the body ends → probe →
 * (dead: report once and stop) or (alive or unknown: request again after a backoff). Each
 * asynchronous step holds a reference on its watch, so a watch that is dropped (the view no
 * longer lists it) while a step is in flight is freed when that step comes back cancelled.
 */
#include "failover/sk-peers.h"

#include <string.h>

#include "common/sk-common.h"
#include "common/sk-http.h"

#define NODE_HEADER "X-Streamkeeper-Node"
#define INCARNATION_HEADER "X-Streamkeeper-Incarnation"
/* What we serve: a newline this often, so either side notices a vanished other. */
#define KEEPALIVE_MS 1000
/* A watch that read nothing for this long (a stopped peer) ends and is probed. */
#define WATCH_IO_TIMEOUT_S 3
#define PROBE_TIMEOUT_S 1
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
/* A connection that lasted this long resets the backoff. */
#define STABLE_US (10 * G_USEC_PER_SEC)
/* Bytes of keep-alive a caller may leave unread before it is dropped. */
#define SERVED_BACKLOG_MAX 1024
#define NODE_ID_MAX 128

typedef struct {
  gint refs;
  SkPeers *owner; /* NULL once dropped */
  char *node;
  guint64 incarnation;
  char *url;
  gboolean wanted; /* mark of the current sync */
  GCancellable *cancellable;
  GInputStream *body;
  char buf[256];
  guint retry_id;
  guint backoff_ms;
  gint64 connected_us; /* 0 while not connected */
  guint last_status;   /* a refusal already logged */
} Watch;

typedef struct {
  SkPeers *owner;
  SoupServerMessage *msg;
  char *from;
  guint keepalive_id;
  gsize queued;
  gboolean closing;
} Served;

struct _SkPeers {
  const SkConfig *config;
  SkPeersDeadFunc dead;
  gpointer dead_data;
  guint64 incarnation;
  SoupSession *http;
  GSocketClient *prober;
  GHashTable *watches; /* node id → Watch* (a reference) */
  GHashTable *served;  /* Served* set */
};

static void watch_request (Watch *w);

static Watch *
watch_ref (Watch *w)
{
  w->refs++;
  return w;
}

static void
watch_unref (Watch *w)
{
  if (--w->refs > 0)
    return;
  g_clear_object (&w->body);
  g_clear_object (&w->cancellable);
  g_free (w->url);
  g_free (w->node);
  g_free (w);
}

/* Stops whatever the watch is doing; an operation in flight returns cancelled. */
static void
watch_drop (Watch *w)
{
  w->owner = NULL;
  g_cancellable_cancel (w->cancellable);
  g_clear_handle_id (&w->retry_id, g_source_remove);
  watch_unref (w);
}

/* TRUE if the step that just completed belongs to a dropped watch (and drops our ref). */
static gboolean
watch_step_stale (Watch *w)
{
  if (w->owner != NULL && !g_cancellable_is_cancelled (w->cancellable))
    return FALSE;
  watch_unref (w);
  return TRUE;
}

static gboolean
on_retry (gpointer user_data)
{
  Watch *w = user_data;

  w->retry_id = 0;
  watch_request (w);
  return G_SOURCE_REMOVE;
}

static void
watch_retry_later (Watch *w, guint delay_ms)
{
  g_clear_handle_id (&w->retry_id, g_source_remove);
  w->retry_id = g_timeout_add (delay_ms, on_retry, w);
}

static guint
watch_next_backoff (Watch *w)
{
  guint ms = w->backoff_ms;

  w->backoff_ms = MIN (w->backoff_ms * 2, BACKOFF_MAX_MS);
  return ms;
}

static void
on_probed (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Watch *w = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GSocketConnection) conn
      = g_socket_client_connect_to_uri_finish (G_SOCKET_CLIENT (source), result, &error);
  SkPeers *self;
  guint delay;

  if (watch_step_stale (w))
    return;
  self = w->owner;
  if (conn == NULL && g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CONNECTION_REFUSED)) {
    g_autofree char *reason = g_strdup_printf (
        "its connection to this node ended and nothing listens at %s any more", w->url);

    /* Reported once: the view drops the watch when the retirement shows. */
    self->dead (w->node, w->incarnation, reason, self->dead_data);
    watch_unref (w);
    return;
  }
  delay = watch_next_backoff (w);
  if (conn != NULL)
    g_message ("peers: node %s incarnation %" G_GUINT64_FORMAT
               ": its connection ended but %s still accepts connections (stopped or busy?): "
               "not declared dead, its lease decides; watching again in %u ms",
               w->node, w->incarnation, w->url, delay);
  else
    g_message ("peers: node %s incarnation %" G_GUINT64_FORMAT
               ": its connection ended and probing %s failed (%s): not declared dead, its "
               "lease decides; watching again in %u ms",
               w->node, w->incarnation, w->url, error->message, delay);
  if (conn != NULL)
    g_io_stream_close (G_IO_STREAM (conn), NULL, NULL);
  watch_retry_later (w, delay);
  watch_unref (w);
}

/* The watch's connection is over: does anything still listen where the peer was? */
static void
watch_ended (Watch *w, const char *why)
{
  SkPeers *self = w->owner;

  g_debug ("peers: watch of node %s incarnation %" G_GUINT64_FORMAT " ended: %s; probing %s",
           w->node, w->incarnation, why, w->url);
  if (w->connected_us != 0 && g_get_monotonic_time () - w->connected_us >= STABLE_US)
    w->backoff_ms = BACKOFF_MIN_MS;
  w->connected_us = 0;
  g_clear_object (&w->body);
  g_socket_client_connect_to_uri_async (self->prober, w->url, 80, w->cancellable, on_probed,
                                        watch_ref (w));
}

static void
on_read (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Watch *w = user_data;
  g_autoptr (GError) error = NULL;
  gssize n = g_input_stream_read_finish (G_INPUT_STREAM (source), result, &error);

  if (watch_step_stale (w))
    return;
  if (n > 0) {
    g_input_stream_read_async (w->body, w->buf, sizeof w->buf, G_PRIORITY_HIGH, w->cancellable,
                               on_read, w);
    return;
  }
  watch_ended (w, n == 0 ? "closed by the peer" : error->message);
  watch_unref (w);
}

static void
on_sent (GObject *source, GAsyncResult *result, gpointer user_data)
{
  Watch *w = user_data;
  g_autoptr (GError) error = NULL;
  g_autoptr (GInputStream) body = soup_session_send_finish (SOUP_SESSION (source), result, &error);
  SoupMessage *msg = soup_session_get_async_result_message (SOUP_SESSION (source), result);
  guint status = msg != NULL ? soup_message_get_status (msg) : 0;

  if (watch_step_stale (w))
    return;
  if (body == NULL) {
    watch_ended (w, error->message);
    watch_unref (w);
    return;
  }
  if (status != SOUP_STATUS_OK) {
    guint delay = BACKOFF_MAX_MS;

    /* Refused (wrong cluster secret, an older node, too many callers): the lease still
     * covers it; say so once per status, not every retry. */
    if (status != w->last_status)
      g_warning ("peers: node %s refuses to be watched (%u %s); fast death detection of it is "
                 "off, its lease alone decides (check [cluster] secret on both nodes)",
                 w->node, status, soup_message_get_reason_phrase (msg));
    w->last_status = status;
    g_input_stream_close (body, NULL, NULL);
    watch_retry_later (w, delay);
    watch_unref (w);
    return;
  }
  if (w->last_status != 0 && w->last_status != SOUP_STATUS_OK)
    g_message ("peers: node %s accepts to be watched again", w->node);
  w->last_status = status;
  w->connected_us = g_get_monotonic_time ();
  w->body = g_steal_pointer (&body);
  g_debug ("peers: watching node %s incarnation %" G_GUINT64_FORMAT " at %s", w->node,
           w->incarnation, w->url);
  g_input_stream_read_async (w->body, w->buf, sizeof w->buf, G_PRIORITY_HIGH, w->cancellable,
                             on_read, w);
}

static void
watch_request (Watch *w)
{
  SkPeers *self = w->owner;
  g_autofree char *target = g_strconcat (w->url, SK_PEERS_PATH, NULL);
  g_autofree char *auth = g_strconcat ("Bearer ", self->config->cluster_secret, NULL);
  g_autoptr (SoupMessage) msg = soup_message_new ("GET", target);
  SoupMessageHeaders *headers;

  if (msg == NULL) {
    g_warning ("peers: node %s advertises an unusable URL (%s): not watched", w->node, w->url);
    return;
  }
  headers = soup_message_get_request_headers (msg);
  soup_message_headers_replace (headers, "Authorization", auth);
  soup_message_headers_replace (headers, NODE_HEADER, self->config->node_id);
  /* Its own connection, never one an API call or a forward would queue behind. */
  soup_message_add_flags (msg, SOUP_MESSAGE_NEW_CONNECTION);
  soup_session_send_async (self->http, msg, G_PRIORITY_HIGH, w->cancellable, on_sent,
                           watch_ref (w));
}

/* ---- serving: other nodes watch us -------------------------------------------------------- */

static void
served_free (Served *s)
{
  g_clear_handle_id (&s->keepalive_id, g_source_remove);
  g_signal_handlers_disconnect_by_data (s->msg, s);
  g_object_unref (s->msg);
  g_free (s->from);
  g_free (s);
}

static void
on_served_finished (SoupServerMessage *msg, Served *s)
{
  g_debug ("peers: node %s stopped watching us", s->from);
  g_hash_table_remove (s->owner->served, s);
}

static void
on_served_wrote (SoupServerMessage *msg, guint n, Served *s)
{
  s->queued -= MIN (s->queued, n);
}

/* Cuts the connection: libsoup's pending write fails and finishes the message. */
static void
served_drop (Served *s, const char *why)
{
  GSocket *socket = soup_server_message_get_socket (s->msg);

  if (s->closing)
    return;
  g_message ("peers: dropping the watch of node %s: %s", s->from, why);
  s->closing = TRUE;
  g_clear_handle_id (&s->keepalive_id, g_source_remove);
  if (socket != NULL)
    g_socket_shutdown (socket, TRUE, TRUE, NULL);
  soup_server_message_unpause (s->msg);
}

static void
served_write (Served *s, const char *data)
{
  gsize len = strlen (data);

  if (s->closing)
    return;
  if (s->queued + len > SERVED_BACKLOG_MAX) {
    served_drop (s, "it does not read");
    return;
  }
  soup_message_body_append (soup_server_message_get_response_body (s->msg), SOUP_MEMORY_COPY, data,
                            len);
  s->queued += len;
  soup_server_message_unpause (s->msg);
}

static gboolean
on_keepalive (gpointer user_data)
{
  served_write (user_data, "\n");
  return G_SOURCE_CONTINUE;
}

static gboolean
node_id_is_sane (const char *id)
{
  if (id == NULL || id[0] == '\0' || strlen (id) > NODE_ID_MAX)
    return FALSE;
  for (const char *p = id; *p != '\0'; p++) {
    if (!g_ascii_isalnum (*p) && strchr ("-_.:", *p) == NULL)
      return FALSE;
  }
  return TRUE;
}

static void
peers_handler (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
               gpointer user_data)
{
  SkPeers *self = user_data;
  const char *secret = self->config->cluster_secret;
  const char *bearer, *from;
  SoupMessageHeaders *headers = soup_server_message_get_response_headers (msg);
  GHashTableIter iter;
  Served *s, *old, *replaced = NULL;
  g_autofree char *hello = NULL;

  if (strcmp (path, SK_PEERS_PATH) != 0) {
    sk_http_reply_error (msg, SOUP_STATUS_NOT_FOUND, "not_found", "no such internal endpoint");
    return;
  }
  if (soup_server_message_get_method (msg) != SOUP_METHOD_GET) {
    sk_http_reply_error (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method_not_allowed", "use GET");
    return;
  }
  if (secret == NULL || secret[0] == '\0') {
    sk_http_reply_error (msg, SOUP_STATUS_FORBIDDEN, "forbidden",
                         "this node has no cluster secret: internal endpoints are disabled");
    return;
  }
  bearer = sk_http_get_bearer (msg);
  if (bearer == NULL || !sk_secure_equal (bearer, secret)) {
    sk_http_reply_error (msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized",
                         "missing or wrong cluster secret");
    return;
  }
  from = soup_message_headers_get_one (soup_server_message_get_request_headers (msg), NODE_HEADER);
  if (!node_id_is_sane (from)) {
    sk_http_reply_error (msg, SOUP_STATUS_BAD_REQUEST, "invalid",
                         NODE_HEADER " must name the calling node");
    return;
  }
  /* One watch per calling node: a new one means the old connection is dead to its caller. */
  g_hash_table_iter_init (&iter, self->served);
  while (replaced == NULL && g_hash_table_iter_next (&iter, (gpointer *)&old, NULL)) {
    if (strcmp (old->from, from) == 0 && !old->closing)
      replaced = old;
  }
  if (replaced != NULL)
    served_drop (replaced, "replaced by a new watch");
  if (g_hash_table_size (self->served) >= SK_PEERS_MAX_SERVED) {
    sk_http_reply_error (msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "limit",
                         "this node is watched by %u nodes already", SK_PEERS_MAX_SERVED);
    return;
  }

  s = g_new0 (Served, 1);
  s->owner = self;
  s->msg = g_object_ref (msg);
  s->from = g_strdup (from);
  g_hash_table_add (self->served, s);

  soup_server_message_set_status (msg, SOUP_STATUS_OK, NULL);
  soup_message_headers_set_content_type (headers, "text/plain", NULL);
  soup_message_headers_replace (headers, "Cache-Control", "no-store");
  hello = g_strdup_printf ("%" G_GUINT64_FORMAT, self->incarnation);
  soup_message_headers_replace (headers, INCARNATION_HEADER, hello);
  g_clear_pointer (&hello, g_free);
  soup_message_headers_set_encoding (headers, SOUP_ENCODING_CHUNKED);
  soup_message_body_set_accumulate (soup_server_message_get_response_body (msg), FALSE);
  g_signal_connect (msg, "wrote-body-data", G_CALLBACK (on_served_wrote), s);
  g_signal_connect (msg, "finished", G_CALLBACK (on_served_finished), s);
  s->keepalive_id = g_timeout_add (KEEPALIVE_MS, on_keepalive, s);
  hello = g_strdup_printf ("streamkeeper peer %s incarnation %" G_GUINT64_FORMAT "\n",
                           self->config->node_id, self->incarnation);
  served_write (s, hello);
  g_debug ("peers: node %s watches us", from);
}

/* ---- public ------------------------------------------------------------------------------ */

SkPeers *
sk_peers_new (const SkConfig *config, SkPeersDeadFunc dead, gpointer user_data)
{
  SkPeers *self = g_new0 (SkPeers, 1);

  self->config = config;
  self->dead = dead;
  self->dead_data = user_data;
  self->watches = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, (GDestroyNotify)watch_drop);
  self->served = g_hash_table_new_full (NULL, NULL, (GDestroyNotify)served_free, NULL);
  return self;
}

void
sk_peers_free (SkPeers *self)
{
  GHashTableIter iter;
  Served *s;

  if (self == NULL)
    return;
  g_hash_table_unref (self->watches);
  /* End each served stream; the messages outlive us in libsoup, our handlers do not. */
  g_hash_table_iter_init (&iter, self->served);
  while (g_hash_table_iter_next (&iter, (gpointer *)&s, NULL)) {
    g_signal_handlers_disconnect_by_data (s->msg, s);
    if (!s->closing) {
      soup_message_body_complete (soup_server_message_get_response_body (s->msg));
      soup_server_message_unpause (s->msg);
    }
  }
  g_hash_table_unref (self->served);
  g_clear_object (&self->http);
  g_clear_object (&self->prober);
  g_free (self);
}

void
sk_peers_attach_http (SkPeers *self, SoupServer *server)
{
  soup_server_add_handler (server, SK_PEERS_PATH, peers_handler, self, NULL);
}

void
sk_peers_set_incarnation (SkPeers *self, guint64 incarnation)
{
  self->incarnation = incarnation;
}

void
sk_peers_begin_sync (SkPeers *self)
{
  GHashTableIter iter;
  Watch *w;

  g_hash_table_iter_init (&iter, self->watches);
  while (g_hash_table_iter_next (&iter, NULL, (gpointer *)&w))
    w->wanted = FALSE;
}

void
sk_peers_want (SkPeers *self, const char *node, guint64 incarnation, const char *url)
{
  Watch *w = g_hash_table_lookup (self->watches, node);

  if (url == NULL || url[0] == '\0' || self->config->cluster_secret == NULL
      || self->config->cluster_secret[0] == '\0')
    return;
  if (w != NULL && w->incarnation == incarnation && strcmp (w->url, url) == 0) {
    w->wanted = TRUE;
    return;
  }
  if (self->http == NULL) {
    /* Straight to the node: a proxy in between would answer for it. */
    self->http
        = soup_session_new_with_options ("timeout", WATCH_IO_TIMEOUT_S, "max-conns", 1024,
                                         "max-conns-per-host", 4, "proxy-resolver", NULL, NULL);
    self->prober = g_socket_client_new ();
    g_socket_client_set_enable_proxy (self->prober, FALSE);
    g_socket_client_set_timeout (self->prober, PROBE_TIMEOUT_S);
  }
  w = g_new0 (Watch, 1);
  w->refs = 1;
  w->owner = self;
  w->node = g_strdup (node);
  w->incarnation = incarnation;
  w->url = g_strdup (url);
  w->wanted = TRUE;
  w->cancellable = g_cancellable_new ();
  w->backoff_ms = BACKOFF_MIN_MS;
  g_hash_table_replace (self->watches, w->node, w);
  watch_request (w);
}

void
sk_peers_end_sync (SkPeers *self)
{
  GHashTableIter iter;
  Watch *w;

  g_hash_table_iter_init (&iter, self->watches);
  while (g_hash_table_iter_next (&iter, NULL, (gpointer *)&w)) {
    if (!w->wanted)
      g_hash_table_iter_remove (&iter);
  }
}

void
sk_peers_clear (SkPeers *self)
{
  g_hash_table_remove_all (self->watches);
}

guint
sk_peers_get_n_connected (SkPeers *self)
{
  GHashTableIter iter;
  Watch *w;
  guint n = 0;

  g_hash_table_iter_init (&iter, self->watches);
  while (g_hash_table_iter_next (&iter, NULL, (gpointer *)&w))
    n += w->connected_us != 0;
  return n;
}

guint
sk_peers_get_n_served (SkPeers *self)
{
  return g_hash_table_size (self->served);
}
