/*
 * streamkeeper: the RTMP server — sockets, timeouts and the ingress registry around the
 * per-connection protocol logic of sk-rtmp-connection.c. Everything runs on the thread-default
 * main context with non-blocking sockets; a connection is a few GSources, never a thread.
 */
#include "sk-rtmp-server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>

#include "common/sk-common.h"
#include "sk-rtmp-connection.h"

/* Beyond this much unsent output we stop reading from the peer until it drains. */
#define OUTPUT_HIGH_WATER (256 * 1024)
/* Room kept in the input buffer beyond one whole unit, so reads are not tiny. */
#define INPUT_READ_AHEAD (64 * 1024)
/* How long a refused connection may take to read our error before we close anyway. */
#define FLUSH_TIMEOUT_MS 2000
/* A key unknown here is looked up in the store (created through another node's API less than
 * a registry refresh ago) for at most this long before the publish is refused. */
#define KEY_LOOKUP_TIMEOUT_MS 2000

typedef struct _SkRtmpServerConn Conn;

struct _SkRtmpServer {
  guint max_connections;
  guint handshake_timeout_ms;
  guint idle_timeout_ms;
  guint publisher_timeout_ms;
  SkRtmpChunkLimits limits;
  SkIngressRegistry *registry;

  GSocket *listener;
  GSource *accept_source;
  GQueue conns;
  guint port;
};

struct _SkRtmpServerConn {
  SkRtmpServer *server;
  GList link; /* in server->conns */
  GSocket *socket;
  GSource *in_source;
  GSource *out_source;
  GSource *timer;
  char *peer;
  SkRtmpConnection *proto;
  GByteArray *in;
  gsize in_cap;
  SkIngressSession *session;
  guint64 bytes_in;

  gint64 opened_us;
  gint64 idle_since_us;  /* start of the not-publishing idle period */
  gint64 last_media_us;  /* last audio/video message while publishing */
  gint64 flush_until_us; /* CLOSING: close once output is sent or at this time */

  gboolean busy;       /* inside sk_rtmp_connection_feed: closing must wait */
  char *pending_close; /* a close requested while busy */
  const char *pending_end;
  gboolean media_failed; /* the registry refused a tag; its close func will come */
  guint key_lookup_id;   /* publish deferred while the registry reads the store */
  gboolean key_looked_up;
};

static void conn_close (Conn *c, const char *reason, const char *end_reason);
static void conn_update_sources (Conn *c);

static const char *
end_reason_if_publishing (Conn *c)
{
  return c->session != NULL ? SK_REASON_PUBLISHER_LOST : NULL;
}

/* ---- callbacks from the protocol ---- */

static void
on_registry_close (gpointer transport, const char *reason)
{
  Conn *c = transport;
  g_autofree char *why = g_strdup_printf ("closed by ingress registry (%s)", reason);
  /* The registry has ended and freed the session already. */
  c->session = NULL;
  conn_close (c, why, NULL);
}

static void conn_process (Conn *c);
static gboolean conn_start_session (Conn *c, const char *app, const char *stream_key,
                                    GError **error);

/* The registry has read the store: publish's answer is final now. */
static void
on_key_looked_up (const GError *error, gpointer user_data)
{
  Conn *c = user_data;
  g_autoptr (GError) refusal = NULL;

  c->key_lookup_id = 0;
  if (error != NULL)
    g_message ("rtmp %s: stream key lookup: %s", c->peer, error->message);
  conn_start_session (c, sk_rtmp_connection_get_app (c->proto),
                      sk_rtmp_connection_get_stream_key (c->proto), &refusal);
  sk_rtmp_connection_answer_publish (c->proto, refusal);
  /* What the peer sent after `publish` waited in c->in. */
  conn_process (c);
}

static gboolean
on_publish (gpointer user_data, const char *app, const char *stream_key, GError **error)
{
  Conn *c = user_data;

  SK_TIMING ("rtmp %s: publish command", c->peer);
  return conn_start_session (c, app, stream_key, error);
}

static gboolean
conn_start_session (Conn *c, const char *app, const char *stream_key, GError **error)
{
  g_autoptr (GError) local = NULL;
  g_autofree char *masked = sk_rtmp_mask_key (stream_key);

  c->session = sk_ingress_registry_start_session (c->server->registry, SK_INPUT_RTMP, stream_key,
                                                  c->peer, on_registry_close, c, &local);
  if (c->session == NULL && !c->key_looked_up
      && g_error_matches (local, SK_ERROR, SK_ERROR_NOT_FOUND)) {
    /* Maybe created through another node a moment ago: ask the store before refusing. */
    g_message ("rtmp %s: key %s unknown here; reading the store", c->peer, masked);
    c->key_looked_up = TRUE;
    c->key_lookup_id = sk_ingress_registry_refresh (c->server->registry, KEY_LOOKUP_TIMEOUT_MS,
                                                    on_key_looked_up, c);
    g_set_error_literal (error, SK_RTMP_ERROR, SK_RTMP_ERROR_PENDING, "looking the key up");
    return FALSE;
  }
  if (c->session == NULL) {
    SkRtmpError code = SK_RTMP_ERROR_REJECTED;
    const char *description = local->message;
    if (g_error_matches (local, SK_ERROR, SK_ERROR_NOT_FOUND)) {
      code = SK_RTMP_ERROR_BAD_NAME;
      description = "Unknown stream key.";
    } else if (g_error_matches (local, SK_ERROR, SK_ERROR_CONFLICT)) {
      code = SK_RTMP_ERROR_BAD_NAME;
      description = "This stream key is already publishing.";
    } else if (g_error_matches (local, SK_ERROR, SK_ERROR_LIMIT)) {
      description = "Server at capacity, try another node or later.";
    } else if (g_error_matches (local, SK_ERROR, SK_ERROR_UNAVAILABLE)) {
      description = "Server is not accepting streams right now, try another node.";
    }
    g_message ("rtmp %s: publish of key %s refused: %s", c->peer, masked, local->message);
    g_set_error_literal (error, SK_RTMP_ERROR, code, description);
    return FALSE;
  }
  c->last_media_us = g_get_monotonic_time ();
  g_message ("rtmp %s: publishing key %s (app \"%s\", ingress %s)", c->peer, masked, app,
             sk_ingress_session_get_ingress_id (c->session));
  return TRUE;
}

static gboolean
on_media (gpointer user_data, guint8 tag_type, guint32 timestamp, const guint8 *data, gsize size,
          GError **error)
{
  Conn *c = user_data;
  if (c->session == NULL)
    return TRUE;
  if (tag_type != SK_RTMP_MSG_DATA_AMF0)
    c->last_media_us = g_get_monotonic_time ();
  if (!sk_ingress_session_push_flv_tag (c->session, tag_type, timestamp, data, size, error)) {
    c->media_failed = TRUE;
    return FALSE;
  }
  return TRUE;
}

static void
on_unpublish (gpointer user_data)
{
  Conn *c = user_data;
  if (c->session == NULL)
    return;
  g_message ("rtmp %s: unpublished by the client", c->peer);
  sk_ingress_session_end (g_steal_pointer (&c->session), SK_REASON_CLIENT_INITIATED);
  c->idle_since_us = g_get_monotonic_time ();
}

static const SkRtmpConnectionCallbacks callbacks = {
  .publish = on_publish,
  .media = on_media,
  .unpublish = on_unpublish,
};

/* ---- timeouts ---- */

static gint64
deadline_after (gint64 since_us, guint timeout_ms)
{
  return timeout_ms > 0 ? since_us + (gint64)timeout_ms * 1000 : -1;
}

/* The next time something must happen to @c, with the reason to close then; -1 for never. */
static gint64
conn_deadline (Conn *c, const char **reason, const char **end_reason)
{
  SkRtmpServer *s = c->server;
  *end_reason = NULL;
  if (c->media_failed)
    return -1;
  switch (sk_rtmp_connection_get_state (c->proto)) {
    case SK_RTMP_CONNECTION_HANDSHAKE:
      *reason = "handshake timeout";
      return deadline_after (c->opened_us, s->handshake_timeout_ms);
    case SK_RTMP_CONNECTION_PUBLISHING:
      *reason = "publisher timeout (no media)";
      *end_reason = SK_REASON_PUBLISHER_LOST;
      return deadline_after (c->last_media_us, s->publisher_timeout_ms);
    case SK_RTMP_CONNECTION_CLOSING:
      *reason = "peer did not read our last message";
      return c->flush_until_us;
    case SK_RTMP_CONNECTION_CONNECTING:
    case SK_RTMP_CONNECTION_CONNECTED:
    default:
      *reason = "idle timeout (no publish)";
      return deadline_after (c->idle_since_us, s->idle_timeout_ms);
  }
}

static gboolean
on_timer (gpointer user_data)
{
  Conn *c = user_data;
  const char *reason, *end_reason;
  gint64 deadline = conn_deadline (c, &reason, &end_reason);
  if (deadline >= 0 && g_get_monotonic_time () >= deadline) {
    conn_close (c, reason, end_reason);
    return G_SOURCE_REMOVE;
  }
  g_source_set_ready_time (c->timer, deadline);
  return G_SOURCE_CONTINUE;
}

/* A plain source that only wakes at its ready time. */
static gboolean
timer_dispatch (GSource *source, GSourceFunc callback, gpointer user_data)
{
  g_source_set_ready_time (source, -1);
  return callback (user_data);
}

static GSourceFuncs timer_funcs = { .dispatch = timer_dispatch };

/* ---- I/O ---- */

static gboolean on_readable (GSocket *socket, GIOCondition condition, gpointer user_data);
static gboolean on_writable (GSocket *socket, GIOCondition condition, gpointer user_data);

static void
source_clear (GSource **source)
{
  if (*source != NULL) {
    g_source_destroy (*source);
    g_clear_pointer (source, g_source_unref);
  }
}

static GSource *
socket_source (Conn *c, GIOCondition condition, GSocketSourceFunc func)
{
  GSource *source = g_socket_create_source (c->socket, condition, NULL);
  g_source_set_callback (source, G_SOURCE_FUNC (func), c, NULL);
  /* GLib blocks a non-recursive source around each dispatch by taking its fd out of the
   * poll set and putting it back, and each of those signals the context's wakeup fd: two
   * eventfd writes and one extra loop iteration per read. Our callbacks never iterate the
   * context, so there is nothing to guard against. */
  g_source_set_can_recurse (source, TRUE);
  g_source_attach (source, NULL);
  return source;
}

/* Sends what it can without blocking. FALSE: the connection was closed. */
static gboolean
conn_flush (Conn *c)
{
  GByteArray *out = sk_rtmp_connection_get_output (c->proto);
  while (out->len > 0) {
    g_autoptr (GError) error = NULL;
    gssize n = g_socket_send (c->socket, (const char *)out->data, out->len, NULL, &error);
    if (n < 0) {
      if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        break;
      g_autofree char *why = g_strdup_printf ("write error: %s", error->message);
      conn_close (c, why, end_reason_if_publishing (c));
      return FALSE;
    }
    g_byte_array_remove_range (out, 0, n);
  }
  if (out->len == 0 && sk_rtmp_connection_get_state (c->proto) == SK_RTMP_CONNECTION_CLOSING) {
    conn_close (c, sk_rtmp_connection_get_close_reason (c->proto), NULL);
    return FALSE;
  }
  return TRUE;
}

/* Read when there is room and nothing blocks us; write when output waits. */
static void
conn_update_sources (Conn *c)
{
  GByteArray *out = sk_rtmp_connection_get_output (c->proto);
  SkRtmpConnectionState state = sk_rtmp_connection_get_state (c->proto);
  gboolean want_read = !c->media_failed && out->len < OUTPUT_HIGH_WATER
                       && state != SK_RTMP_CONNECTION_CLOSING
                       && state != SK_RTMP_CONNECTION_PUBLISH_WAIT;
  gboolean want_write = out->len > 0;

  if (want_read && c->in_source == NULL)
    c->in_source = socket_source (c, G_IO_IN, on_readable);
  else if (!want_read)
    source_clear (&c->in_source);
  if (want_write && c->out_source == NULL)
    c->out_source = socket_source (c, G_IO_OUT, on_writable);
  else if (!want_write)
    source_clear (&c->out_source);

  /* Only ever move the timer earlier: every change of a ready time signals the main loop's
   * wakeup fd, and the publisher deadline moves with each media message. A timer that fires
   * early finds the real deadline and re-arms itself (on_timer). */
  const char *reason, *end_reason;
  gint64 deadline = conn_deadline (c, &reason, &end_reason);
  gint64 armed = g_source_get_ready_time (c->timer);
  if (deadline >= 0 && (armed < 0 || deadline < armed))
    g_source_set_ready_time (c->timer, deadline);
}

static void
conn_process (Conn *c)
{
  g_autoptr (GError) error = NULL;
  gsize consumed = 0, needed = 0;

  c->busy = TRUE;
  gboolean ok
      = sk_rtmp_connection_feed (c->proto, c->in->data, c->in->len, &consumed, &needed, &error);
  c->busy = FALSE;
  g_byte_array_remove_range (c->in, 0, consumed);

  if (c->pending_close != NULL) {
    g_autofree char *why = g_steal_pointer (&c->pending_close);
    conn_close (c, why, c->pending_end);
    return;
  }
  if (!ok && c->media_failed) {
    /* The registry is ending the session and will call on_registry_close. */
    g_message ("rtmp %s: media refused: %s", c->peer, error->message);
    conn_update_sources (c);
    return;
  }
  if (!ok) {
    g_autofree char *why = g_strdup_printf ("protocol error: %s", error->message);
    conn_close (c, why, end_reason_if_publishing (c));
    return;
  }
  if (sk_rtmp_connection_get_state (c->proto) == SK_RTMP_CONNECTION_CLOSING
      && c->flush_until_us == 0)
    c->flush_until_us = g_get_monotonic_time () + FLUSH_TIMEOUT_MS * 1000;
  if (!conn_flush (c))
    return;
  conn_update_sources (c);
}

static gboolean
on_readable (GSocket *socket, GIOCondition condition, gpointer user_data)
{
  Conn *c = user_data;
  guint8 buf[16384];
  g_autoptr (GError) error = NULL;

  gsize room = c->in_cap - c->in->len;
  if (room == 0) {
    /* Cannot happen while units are bounded by the limits; never read 0 bytes as EOF. */
    conn_close (c, "input buffer full", end_reason_if_publishing (c));
    return G_SOURCE_REMOVE;
  }
  gssize n = g_socket_receive (socket, (char *)buf, MIN (room, sizeof buf), NULL, &error);
  if (n < 0) {
    if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
      return G_SOURCE_CONTINUE;
    g_autofree char *why = g_strdup_printf ("read error: %s", error->message);
    conn_close (c, why, end_reason_if_publishing (c));
    return G_SOURCE_REMOVE;
  }
  if (n == 0) {
    conn_close (c, c->session != NULL ? "connection lost while publishing" : "peer closed",
                end_reason_if_publishing (c));
    return G_SOURCE_REMOVE;
  }
  c->bytes_in += n;
  g_byte_array_append (c->in, buf, n);
  conn_process (c);
  /* conn_process may have freed @c or replaced its sources: never touch c after it. */
  return G_SOURCE_CONTINUE;
}

static gboolean
on_writable (GSocket *socket, GIOCondition condition, gpointer user_data)
{
  Conn *c = user_data;
  if (conn_flush (c))
    conn_update_sources (c);
  return G_SOURCE_CONTINUE;
}

/* ---- connection lifetime ---- */

static char *
peer_string (GSocket *socket)
{
  g_autoptr (GSocketAddress) addr = g_socket_get_remote_address (socket, NULL);
  if (!G_IS_INET_SOCKET_ADDRESS (addr))
    return g_strdup ("?");
  GInetSocketAddress *inet = G_INET_SOCKET_ADDRESS (addr);
  g_autofree char *ip = g_inet_address_to_string (g_inet_socket_address_get_address (inet));
  guint16 port = g_inet_socket_address_get_port (inet);
  if (strchr (ip, ':') != NULL)
    return g_strdup_printf ("[%s]:%u", ip, port);
  return g_strdup_printf ("%s:%u", ip, port);
}

static void
conn_open (SkRtmpServer *s, GSocket *socket)
{
  Conn *c = g_new0 (Conn, 1);
  c->server = s;
  c->socket = socket;
  c->peer = peer_string (socket);
  c->proto = sk_rtmp_connection_new (&s->limits, &callbacks, c);
  c->in_cap = sk_rtmp_connection_max_unit_size (c->proto) + INPUT_READ_AHEAD;
  c->in = g_byte_array_new ();
  c->opened_us = c->idle_since_us = g_get_monotonic_time ();
  c->link.data = c;
  g_queue_push_tail_link (&s->conns, &c->link);

  g_socket_set_blocking (socket, FALSE);
  /* Command replies are small and latency matters more than packing. */
  g_socket_set_option (socket, IPPROTO_TCP, TCP_NODELAY, 1, NULL);

  c->timer = g_source_new (&timer_funcs, sizeof (GSource));
  g_source_set_callback (c->timer, on_timer, c, NULL);
  g_source_attach (c->timer, NULL);
  conn_update_sources (c);

  g_message ("rtmp %s: connection opened (%u/%u)", c->peer, s->conns.length, s->max_connections);
  SK_TIMING ("rtmp %s: connection opened", c->peer);
}

static void
conn_close (Conn *c, const char *reason, const char *end_reason)
{
  if (c->busy) {
    /* Called from inside the protocol (a callback): finish there first. */
    if (c->pending_close == NULL) {
      c->pending_close = g_strdup (reason);
      c->pending_end = end_reason;
    }
    return;
  }

  SkRtmpServer *s = c->server;
  g_autofree char *masked = sk_rtmp_mask_key (sk_rtmp_connection_get_stream_key (c->proto));
  g_message ("rtmp %s: connection closed: %s (key %s, %" G_GUINT64_FORMAT " bytes in, %.1f s)",
             c->peer, reason, masked, c->bytes_in, (g_get_monotonic_time () - c->opened_us) / 1e6);

  if (c->key_lookup_id != 0)
    sk_ingress_registry_cancel_refresh (s->registry, c->key_lookup_id);
  if (c->session != NULL) {
    SkIngressSession *session = g_steal_pointer (&c->session);
    sk_ingress_session_end (session, end_reason != NULL ? end_reason : SK_REASON_PUBLISHER_LOST);
  }
  g_queue_unlink (&s->conns, &c->link);
  source_clear (&c->in_source);
  source_clear (&c->out_source);
  source_clear (&c->timer);
  g_socket_close (c->socket, NULL);
  g_object_unref (c->socket);
  sk_rtmp_connection_free (c->proto);
  g_byte_array_unref (c->in);
  g_free (c->pending_close);
  g_free (c->peer);
  g_free (c);
}

static gboolean
on_accept (GSocket *listener, GIOCondition condition, gpointer user_data)
{
  SkRtmpServer *s = user_data;
  for (;;) {
    g_autoptr (GError) error = NULL;
    GSocket *socket = g_socket_accept (listener, NULL, &error);
    if (socket == NULL) {
      if (!g_error_matches (error, G_IO_ERROR, G_IO_ERROR_WOULD_BLOCK))
        g_warning ("rtmp: accept failed: %s", error->message);
      return G_SOURCE_CONTINUE;
    }
    if (s->max_connections > 0 && s->conns.length >= s->max_connections) {
      g_autofree char *peer = peer_string (socket);
      g_message ("rtmp %s: connection refused: limit of %u connections reached", peer,
                 s->max_connections);
      g_socket_close (socket, NULL);
      g_object_unref (socket);
      continue;
    }
    conn_open (s, socket);
  }
}

/* ---- public API ---- */

SkRtmpServer *
sk_rtmp_server_new (const SkConfig *config, SkIngressRegistry *registry, GError **error)
{
  g_autoptr (GInetAddress) addr = g_inet_address_new_from_string (config->bind);
  if (addr == NULL) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "RTMP bind address \"%s\" is not an IP address",
                 config->bind);
    return NULL;
  }
  g_autoptr (GSocket) listener = g_socket_new (g_inet_address_get_family (addr),
                                               G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, error);
  if (listener == NULL)
    return NULL;
  g_autoptr (GSocketAddress) bind_addr = g_inet_socket_address_new (addr, config->rtmp_port);
  g_socket_set_blocking (listener, FALSE);
  g_socket_set_listen_backlog (listener, 128);
  if (!g_socket_bind (listener, bind_addr, TRUE, error) || !g_socket_listen (listener, error)) {
    g_prefix_error (error, "RTMP listen on %s:%u: ", config->bind, config->rtmp_port);
    return NULL;
  }
  g_autoptr (GSocketAddress) local = g_socket_get_local_address (listener, error);
  if (local == NULL)
    return NULL;

  SkRtmpServer *s = g_new0 (SkRtmpServer, 1);
  s->max_connections = config->rtmp_max_connections;
  s->handshake_timeout_ms = config->rtmp_handshake_timeout_ms;
  s->idle_timeout_ms = config->rtmp_idle_timeout_ms;
  s->publisher_timeout_ms = config->publisher_timeout_ms;
  s->limits.max_chunk_size = config->rtmp_max_chunk_size;
  s->limits.max_message_size = config->rtmp_max_message_size;
  s->limits.max_chunk_streams = config->rtmp_max_chunk_streams;
  s->registry = registry;
  s->listener = g_steal_pointer (&listener);
  s->port = g_inet_socket_address_get_port (G_INET_SOCKET_ADDRESS (local));
  g_queue_init (&s->conns);

  s->accept_source = g_socket_create_source (s->listener, G_IO_IN, NULL);
  g_source_set_callback (s->accept_source, G_SOURCE_FUNC (on_accept), s, NULL);
  g_source_attach (s->accept_source, NULL);

  g_message ("rtmp: listening on %s:%u", config->bind, s->port);
  return s;
}

void
sk_rtmp_server_free (SkRtmpServer *self)
{
  if (self == NULL)
    return;
  while (self->conns.head != NULL)
    conn_close (self->conns.head->data, "server shutdown", SK_REASON_SERVER_SHUTDOWN);
  source_clear (&self->accept_source);
  g_socket_close (self->listener, NULL);
  g_object_unref (self->listener);
  g_free (self);
}

guint
sk_rtmp_server_get_n_connections (SkRtmpServer *self)
{
  return self->conns.length;
}

guint
sk_rtmp_server_get_port (SkRtmpServer *self)
{
  return self->port;
}
