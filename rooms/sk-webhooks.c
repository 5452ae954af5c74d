/*
 * streamkeeper: webhook delivery.
 *
 * One endpoint per configured URL, each with its own FIFO and at most one POST in flight, so
 * a receiver sees events in order and a dead one only delays itself. A failed POST (network
 * error, timeout, non-2xx) is retried with exponential backoff (0.5 s doubling up to 30 s)
 * up to webhook_max_retries times, then dropped with a warning.
 */
#include "rooms/sk-webhooks.h"

#include <string.h>
#include <libsoup/soup.h>

#include "common/sk-common.h"
#include "sk-build-config.h"

#define WEBHOOK_BACKOFF_FIRST_MS 500
#define WEBHOOK_BACKOFF_MAX_MS 30000
#define WEBHOOK_TIMEOUT_S 10
#define WEBHOOK_QUEUE_DEFAULT 10000
#define WEBHOOK_JWT_TTL_S 600

typedef struct {
  char *id;
  GBytes *body;
  guint attempts;
} Delivery;

typedef struct {
  SkWebhooks *owner;
  char *url;
  GQueue queue;      /* Delivery*, waiting */
  Delivery *current; /* being posted or waiting for its retry */
  SoupMessage *msg;  /* the POST in flight */
  guint retry_id;
  guint64 dropped;
} Endpoint;

struct _SkWebhooks {
  SoupSession *session;
  GCancellable *cancellable;
  GPtrArray *endpoints; /* Endpoint* */
  char *secret;
  guint max_retries;
  guint queue_max;
};

static void endpoint_pump (Endpoint *ep);

static void
delivery_free (Delivery *d)
{
  g_free (d->id);
  g_bytes_unref (d->body);
  g_free (d);
}

static void
endpoint_free (Endpoint *ep)
{
  g_clear_handle_id (&ep->retry_id, g_source_remove);
  g_queue_clear_full (&ep->queue, (GDestroyNotify)delivery_free);
  g_clear_pointer (&ep->current, delivery_free);
  g_clear_object (&ep->msg);
  g_free (ep->url);
  g_free (ep);
}

/* ---- signatures ------------------------------------------------------------------------- */

static char *
base64url (const guint8 *data, gsize len)
{
  char *s = g_base64_encode (data, len);
  gsize n = strlen (s);

  while (n > 0 && s[n - 1] == '=')
    s[--n] = '\0';
  for (char *p = s; *p != '\0'; p++) {
    if (*p == '+')
      *p = '-';
    else if (*p == '/')
      *p = '_';
  }
  return s;
}

static void
hmac_sha256 (const char *key, const guint8 *data, gsize len, guint8 out[32])
{
  g_autoptr (GHmac) hmac = g_hmac_new (G_CHECKSUM_SHA256, (const guchar *)key, strlen (key));
  gsize out_len = 32;

  g_hmac_update (hmac, data, len);
  g_hmac_get_digest (hmac, out, &out_len);
}

/* `sha256=<hex HMAC-SHA256(body, secret)>` */
static char *
signature_header (const char *secret, GBytes *body)
{
  gsize len;
  const guint8 *data = g_bytes_get_data (body, &len);
  guint8 mac[32];
  GString *s = g_string_new ("sha256=");

  hmac_sha256 (secret, data, len, mac);
  for (guint i = 0; i < sizeof mac; i++)
    g_string_append_printf (s, "%02x", mac[i]);
  return g_string_free (s, FALSE);
}

/* LiveKit's scheme: a HS256 JWT whose "sha256" claim is base64(sha256(body)). */
static char *
jwt_header (const char *secret, GBytes *body)
{
  gsize len;
  const guint8 *data = g_bytes_get_data (body, &len);
  guint8 digest[32];
  gsize digest_len = sizeof digest;
  g_autoptr (GChecksum) sum = g_checksum_new (G_CHECKSUM_SHA256);
  g_autofree char *body_hash = NULL;
  g_autofree char *claims = NULL;
  g_autofree char *head64 = NULL;
  g_autofree char *claims64 = NULL;
  g_autofree char *signing_input = NULL;
  g_autofree char *sig64 = NULL;
  static const char head[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
  gint64 now = g_get_real_time () / G_USEC_PER_SEC;
  guint8 mac[32];

  g_checksum_update (sum, data, len);
  g_checksum_get_digest (sum, digest, &digest_len);
  body_hash = g_base64_encode (digest, digest_len);
  claims = g_strdup_printf ("{\"iss\":\"streamkeeper\",\"iat\":%" G_GINT64_FORMAT
                            ",\"nbf\":%" G_GINT64_FORMAT ",\"exp\":%" G_GINT64_FORMAT
                            ",\"sha256\":\"%s\"}",
                            now, now, now + WEBHOOK_JWT_TTL_S, body_hash);
  head64 = base64url ((const guint8 *)head, sizeof head - 1);
  claims64 = base64url ((const guint8 *)claims, strlen (claims));
  signing_input = g_strconcat (head64, ".", claims64, NULL);
  hmac_sha256 (secret, (const guint8 *)signing_input, strlen (signing_input), mac);
  sig64 = base64url (mac, sizeof mac);
  return g_strconcat (signing_input, ".", sig64, NULL);
}

/* ---- delivery --------------------------------------------------------------------------- */

static guint
backoff_ms (guint attempts)
{
  guint ms = WEBHOOK_BACKOFF_FIRST_MS;

  for (guint i = 1; i < attempts && ms < WEBHOOK_BACKOFF_MAX_MS; i++)
    ms *= 2;
  return MIN (ms, WEBHOOK_BACKOFF_MAX_MS);
}

static gboolean
retry_cb (gpointer user_data)
{
  Endpoint *ep = user_data;

  ep->retry_id = 0;
  endpoint_pump (ep);
  return G_SOURCE_REMOVE;
}

static void
on_posted (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (GBytes) reply = NULL;
  Endpoint *ep;
  guint status;

  reply = soup_session_send_and_read_finish (SOUP_SESSION (source), result, &error);
  /* Cancelled only by sk_webhooks_free: the endpoint is gone. */
  if (g_error_matches (error, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    return;
  ep = user_data;
  status = soup_message_get_status (ep->msg);
  g_clear_object (&ep->msg);

  if (reply != NULL && SOUP_STATUS_IS_SUCCESSFUL (status)) {
    g_clear_pointer (&ep->current, delivery_free);
    endpoint_pump (ep);
    return;
  }

  ep->current->attempts++;
  if (ep->current->attempts > ep->owner->max_retries) {
    g_warning ("webhook %s: giving up on %s after %u attempts (%s)", ep->url, ep->current->id,
               ep->current->attempts,
               error != NULL ? error->message : soup_status_get_phrase (status));
    g_clear_pointer (&ep->current, delivery_free);
    endpoint_pump (ep);
    return;
  }
  g_debug ("webhook %s: attempt %u of %s failed (%s)", ep->url, ep->current->attempts,
           ep->current->id, error != NULL ? error->message : soup_status_get_phrase (status));
  ep->retry_id = g_timeout_add (backoff_ms (ep->current->attempts), retry_cb, ep);
}

static void
endpoint_pump (Endpoint *ep)
{
  SkWebhooks *self = ep->owner;
  g_autofree char *signature = NULL;
  g_autofree char *jwt = NULL;
  SoupMessageHeaders *headers;

  if (ep->msg != NULL || ep->retry_id != 0)
    return;
  if (ep->current == NULL)
    ep->current = g_queue_pop_head (&ep->queue);
  if (ep->current == NULL)
    return;

  ep->msg = soup_message_new (SOUP_METHOD_POST, ep->url);
  if (ep->msg == NULL) {
    /* Checked at creation; kept so a bad URL can never spin. */
    g_clear_pointer (&ep->current, delivery_free);
    g_queue_clear_full (&ep->queue, (GDestroyNotify)delivery_free);
    return;
  }
  soup_message_set_request_body_from_bytes (ep->msg, "application/webhook+json", ep->current->body);
  headers = soup_message_get_request_headers (ep->msg);
  signature = signature_header (self->secret, ep->current->body);
  jwt = jwt_header (self->secret, ep->current->body);
  soup_message_headers_replace (headers, "X-Streamkeeper-Signature", signature);
  soup_message_headers_replace (headers, "Authorization", jwt);
  soup_message_headers_replace (headers, "X-Streamkeeper-Event-Id", ep->current->id);
  soup_session_send_and_read_async (self->session, ep->msg, G_PRIORITY_DEFAULT, self->cancellable,
                                    on_posted, ep);
}

static void
endpoint_enqueue (Endpoint *ep, Delivery *d)
{
  /* Bounded: the oldest waiting event goes (never the one being posted). */
  if (g_queue_get_length (&ep->queue) >= ep->owner->queue_max) {
    Delivery *old = g_queue_pop_head (&ep->queue);

    if (ep->dropped++ % 1000 == 0)
      g_warning ("webhook %s: queue full (%u), dropping oldest events (%" G_GUINT64_FORMAT
                 " so far)",
                 ep->url, ep->owner->queue_max, ep->dropped);
    delivery_free (old);
  }
  g_queue_push_tail (&ep->queue, d);
  endpoint_pump (ep);
}

/* ---- public API ------------------------------------------------------------------------- */

SkWebhooks *
sk_webhooks_new (const SkConfig *config)
{
  SkWebhooks *self = g_new0 (SkWebhooks, 1);
  const char *secret = config->webhook_secret;

  if (secret == NULL || secret[0] == '\0')
    secret = config->api_token;
  self->secret = g_strdup (secret != NULL ? secret : "");
  self->max_retries = config->webhook_max_retries;
  self->queue_max
      = config->webhook_queue_max > 0 ? config->webhook_queue_max : WEBHOOK_QUEUE_DEFAULT;
  self->cancellable = g_cancellable_new ();
  self->session = soup_session_new_with_options ("timeout", WEBHOOK_TIMEOUT_S, "user-agent",
                                                 "streamkeeper/" SK_VERSION, NULL);
  self->endpoints = g_ptr_array_new_with_free_func ((GDestroyNotify)endpoint_free);

  for (guint i = 0; config->webhook_urls != NULL && config->webhook_urls[i] != NULL; i++) {
    const char *url = config->webhook_urls[i];
    g_autoptr (GUri) uri = g_uri_parse (url, SOUP_HTTP_URI_FLAGS, NULL);
    Endpoint *ep;

    if (uri == NULL
        || (g_strcmp0 (g_uri_get_scheme (uri), "http") != 0
            && g_strcmp0 (g_uri_get_scheme (uri), "https") != 0)) {
      g_warning ("webhook URL \"%s\" is not an http(s) URL; ignored", url);
      continue;
    }
    ep = g_new0 (Endpoint, 1);
    ep->owner = self;
    ep->url = g_strdup (url);
    g_queue_init (&ep->queue);
    g_ptr_array_add (self->endpoints, ep);
  }
  return self;
}

void
sk_webhooks_free (SkWebhooks *self)
{
  if (self == NULL)
    return;
  /* Callbacks of POSTs still in flight see the cancellation and touch nothing. */
  g_cancellable_cancel (self->cancellable);
  g_ptr_array_unref (self->endpoints);
  soup_session_abort (self->session);
  g_object_unref (self->session);
  g_object_unref (self->cancellable);
  g_free (self->secret);
  g_free (self);
}

void
sk_webhooks_send (SkWebhooks *self, const char *event, JsonObject *payload)
{
  g_autoptr (JsonObject) body = NULL;
  g_autoptr (JsonNode) root = NULL;
  g_autofree char *id = NULL;
  char *json;
  gsize len = 0;

  g_return_if_fail (self != NULL && event != NULL);
  if (self->endpoints->len == 0)
    return;

  id = sk_id_new ("EV_");
  body = json_object_new ();
  json_object_set_string_member (body, "event", event);
  json_object_set_string_member (body, "id", id);
  json_object_set_int_member (body, "createdAt", g_get_real_time () / G_USEC_PER_SEC);
  if (payload != NULL) {
    g_autoptr (GList) members = json_object_get_members (payload);

    for (GList *l = members; l != NULL; l = l->next) {
      const char *name = l->data;

      if (json_object_has_member (body, name))
        continue; /* event, id and createdAt are ours */
      json_object_set_member (body, name, json_node_copy (json_object_get_member (payload, name)));
    }
  }
  root = json_node_init_object (json_node_alloc (), body);
  {
    g_autoptr (JsonGenerator) gen = json_generator_new ();

    json_generator_set_root (gen, root);
    json = json_generator_to_data (gen, &len);
  }

  for (guint i = 0; i < self->endpoints->len; i++) {
    Delivery *d = g_new0 (Delivery, 1);

    d->id = g_strdup (id);
    d->body = g_bytes_new (json, len);
    endpoint_enqueue (g_ptr_array_index (self->endpoints, i), d);
  }
  g_free (json);
}

static gboolean
webhooks_idle (SkWebhooks *self)
{
  for (guint i = 0; i < self->endpoints->len; i++) {
    Endpoint *ep = g_ptr_array_index (self->endpoints, i);

    if (ep->current != NULL || !g_queue_is_empty (&ep->queue))
      return FALSE;
  }
  return TRUE;
}

static gboolean
flush_deadline_cb (gpointer user_data)
{
  *(gboolean *)user_data = TRUE;
  return G_SOURCE_REMOVE;
}

void
sk_webhooks_flush (SkWebhooks *self, guint timeout_ms)
{
  GMainContext *context = g_main_context_ref_thread_default ();
  gboolean expired = FALSE;
  GSource *deadline;

  /* A timer wakes the loop at the deadline even if no POST completes. */
  deadline = g_timeout_source_new (timeout_ms);
  g_source_set_callback (deadline, flush_deadline_cb, &expired, NULL);
  g_source_attach (deadline, context);
  while (!expired && !webhooks_idle (self))
    g_main_context_iteration (context, TRUE);
  g_source_destroy (deadline);
  g_source_unref (deadline);
  g_main_context_unref (context);
}
