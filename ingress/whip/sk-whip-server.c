/*
 * streamkeeper: WHIP ingest (RFC 9725), the HTTP side. See sk-whip-server.h for the routes.
 *
 * A resource ties three things together, all on the main context: the HTTP resource (id,
 * ETag), the registry's ingress session (state, participant, publisher timeout) and the media
 * pipeline (sk-whip-session.c). Whoever ends first ends the others: DELETE (client_initiated),
 * the pipeline or peer connection failing (publisher_lost), or the registry (replaced,
 * deleted, no media, shutdown) through its close func.
 */
#include "ingress/whip/sk-whip-server.h"

#include <string.h>

#include <gst/gst.h>

#include "common/sk-common.h"
#include "common/sk-http.h"
#include "ingress/whip/sk-whip-offer.h"
#include "ingress/whip/sk-whip-session.h"
#include "rooms/sk-webrtc.h"

#define SK_WHIP_PREFIX "/whip"
#define SK_WHIP_RESOURCE_PREFIX "/whip/session/"
#define SK_WHIP_ENDPOINT_METHODS "POST, OPTIONS"
#define SK_WHIP_RESOURCE_METHODS "PATCH, DELETE, OPTIONS"
#define SK_WHIP_MAX_PATCH_BYTES (16 * 1024)
#define SK_WHIP_MAX_PATCH_CANDS 64
#define SK_WHIP_RETRY_AFTER_S "2"
#define SK_WHIP_PROBLEM_TYPE "https://streamkeeper.invalid/problems/"
/* How long a POST with a key unknown here waits for the store (created through another node). */
#define SK_WHIP_KEY_LOOKUP_TIMEOUT_MS 2000
#define SK_WHIP_MAX_KEY_LOOKUPS 64 /* beyond: unknown keys are refused at once */

typedef struct _SkWhipResource SkWhipResource;

struct _SkWhipServer {
  const SkConfig *config;
  SkIngressRegistry *registry;
  GHashTable *resources;    /* id → SkWhipResource (owned) */
  GThread *warm_up;         /* joined before the server goes (gst_deinit must not race it) */
  SkWhipInternal *internal; /* the cluster's internal endpoint, once enabled */
  SkRoomManager *rooms;     /* for the cluster (forwarding), once enabled */
  GHashTable *key_lookups;  /* KeyLookup set (owned): POSTs waiting for the store */
};

/* A POST whose stream key is unknown here, paused while the registry re-reads the store: the
 * ingress may have been created through another node's API less than a refresh ago. */
typedef struct {
  SkWhipServer *server;
  SoupServerMessage *msg; /* paused */
  char *path_key;
  guint refresh_id;
  gulong finished_id;
} KeyLookup;

struct _SkWhipResource {
  SkWhipServer *server;
  char *id;
  char *etag;
  char *ingress_id;
  SkIngressSession *ingress; /* NULL once ended */
  SkWhipSession *media;
  GHashTable *mid_to_mline; /* char* → GUINT_TO_POINTER (mline + 1) */
  char *ice_ufrag;          /* the publisher's current ICE credentials */
  char *bundle_mid;         /* mid and media of the first m-line: the bundle's transport */
  char *bundle_media;

  SoupServerMessage *pending; /* the POST (or restart PATCH) waiting for the answer */
  gulong pending_finished_id;
};

static void resource_destroy (SkWhipResource *res, const char *leave_reason);

/* ---------------------------------------------------------------------------------------- */
/* Replies */

/* An RFC 9457 problem, with the API's {error, code} members alongside. */
static void reply_problem (SoupServerMessage *msg, guint status, const char *code,
                           const char *format, ...) G_GNUC_PRINTF (4, 5);

static void
reply_problem (SoupServerMessage *msg, guint status, const char *code, const char *format, ...)
{
  va_list args;
  va_start (args, format);
  g_autofree char *detail = g_strdup_vprintf (format, args);
  va_end (args);

  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autofree char *type = g_strconcat (SK_WHIP_PROBLEM_TYPE, code, NULL);
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "type");
  json_builder_add_string_value (b, type);
  json_builder_set_member_name (b, "title");
  json_builder_add_string_value (b, soup_status_get_phrase (status));
  json_builder_set_member_name (b, "status");
  json_builder_add_int_value (b, status);
  json_builder_set_member_name (b, "detail");
  json_builder_add_string_value (b, detail);
  json_builder_set_member_name (b, "error");
  json_builder_add_string_value (b, detail);
  json_builder_set_member_name (b, "code");
  json_builder_add_string_value (b, code);
  json_builder_end_object (b);
  g_autoptr (JsonNode) root = json_builder_get_root (b);
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  json_generator_set_root (gen, root);
  gsize len = 0;
  char *body = json_generator_to_data (gen, &len);

  SoupMessageHeaders *h = soup_server_message_get_response_headers (msg);
  if (status == SOUP_STATUS_UNAUTHORIZED)
    soup_message_headers_replace (h, "WWW-Authenticate", "Bearer");
  else if (status == SOUP_STATUS_SERVICE_UNAVAILABLE)
    soup_message_headers_replace (h, "Retry-After", SK_WHIP_RETRY_AFTER_S);
  soup_message_headers_replace (h, "Cache-Control", "no-store");
  soup_server_message_set_status (msg, status, NULL);
  soup_server_message_set_response (msg, "application/problem+json", SOUP_MEMORY_TAKE, body, len);
}

static void
reply_gerror (SoupServerMessage *msg, const GError *error)
{
  guint status = SOUP_STATUS_INTERNAL_SERVER_ERROR;
  const char *code = "internal";

  if (error->domain == SK_ERROR) {
    switch ((SkError)error->code) {
      case SK_ERROR_INVALID:
        status = SOUP_STATUS_BAD_REQUEST, code = "invalid_sdp";
        break;
      case SK_ERROR_UNAUTHORIZED:
      case SK_ERROR_NOT_FOUND:
        /* An unknown key and a disabled one look the same from outside. */
        status = SOUP_STATUS_UNAUTHORIZED, code = "unauthorized";
        break;
      case SK_ERROR_CONFLICT:
        status = SOUP_STATUS_CONFLICT, code = "conflict";
        break;
      case SK_ERROR_TOO_LARGE:
        status = SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE, code = "too_large";
        break;
      case SK_ERROR_UNSUPPORTED:
        status = SOUP_STATUS_UNPROCESSABLE_ENTITY, code = "unacceptable_offer";
        break;
      case SK_ERROR_LIMIT:
        status = SOUP_STATUS_SERVICE_UNAVAILABLE, code = "limit";
        break;
      case SK_ERROR_UNAVAILABLE:
      case SK_ERROR_STALE_EPOCH:
        status = SOUP_STATUS_SERVICE_UNAVAILABLE, code = "unavailable";
        break;
      case SK_ERROR_MEDIA_TYPE:
        status = SOUP_STATUS_UNSUPPORTED_MEDIA_TYPE, code = "unsupported_media_type";
        break;
      case SK_ERROR_INTERNAL:
      default:
        break;
    }
  }
  reply_problem (msg, status, code, "%s", error->message);
}

static void
add_cors (SoupServerMessage *msg, const char *methods)
{
  sk_http_add_cors (msg, methods);
}

static void
add_ice_server_links (SkWhipServer *self, SoupMessageHeaders *h)
{
  const SkConfig *config = self->config;

  for (guint i = 0; config->stun_servers != NULL && config->stun_servers[i] != NULL; i++) {
    const char *uri = config->stun_servers[i];
    /* Config says stun://host:port (webrtcbin's form); the Link header wants stun:host:port. */
    const char *rest = g_str_has_prefix (uri, "stun://") ? uri + 7 : uri;
    g_autofree char *link = g_strdup_printf ("<stun:%s>; rel=\"ice-server\"",
                                             g_str_has_prefix (rest, "stun:") ? rest + 5 : rest);
    soup_message_headers_append (h, "Link", link);
  }
}

/* ---------------------------------------------------------------------------------------- */
/* Resources */

static void
on_pending_finished (SoupServerMessage *msg, gpointer user_data)
{
  SkWhipResource *res = user_data;

  /* The client went away before the answer: nobody will ever use this session. */
  if (res->pending == msg) {
    g_signal_handler_disconnect (msg, res->pending_finished_id);
    res->pending_finished_id = 0;
    g_clear_object (&res->pending);
    if (res->ingress != NULL)
      resource_destroy (res, SK_REASON_PUBLISHER_LOST);
  }
}

static SoupServerMessage *
take_pending (SkWhipResource *res)
{
  SoupServerMessage *msg = res->pending;
  if (msg != NULL) {
    g_signal_handler_disconnect (msg, res->pending_finished_id);
    res->pending_finished_id = 0;
    res->pending = NULL;
  }
  return msg;
}

static void
set_pending (SkWhipResource *res, SoupServerMessage *msg)
{
  res->pending = g_object_ref (msg);
  res->pending_finished_id
      = g_signal_connect (msg, "finished", G_CALLBACK (on_pending_finished), res);
  soup_server_message_pause (msg);
}

static void
new_etag (SkWhipResource *res)
{
  g_autofree char *tag = sk_secret_new (64);
  g_free (res->etag);
  res->etag = g_strdup_printf ("\"%s\"", tag);
}

/* Ends everything of @res and frees it. @leave_reason: how the ingress session ends if it is
 * still live (NULL: the registry already ended it). */
static void
resource_destroy (SkWhipResource *res, const char *leave_reason)
{
  SkWhipServer *self = res->server;

  g_autoptr (SoupServerMessage) msg = take_pending (res);
  if (msg != NULL) {
    add_cors (msg, SK_WHIP_ENDPOINT_METHODS);
    reply_problem (msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "session_ended",
                   "the session ended before it was answered");
    soup_server_message_unpause (msg);
  }
  /* Media first: no streaming thread may push into a track after the participant left. */
  g_clear_pointer (&res->media, sk_whip_session_free);
  if (res->ingress != NULL)
    sk_ingress_session_end (g_steal_pointer (&res->ingress),
                            leave_reason ? leave_reason : SK_REASON_PUBLISHER_LOST);
  g_hash_table_steal (self->resources, res->id);
  g_message ("WHIP session %.8s... of ingress %s closed", res->id, res->ingress_id);
  g_hash_table_unref (res->mid_to_mline);
  g_free (res->ice_ufrag);
  g_free (res->bundle_mid);
  g_free (res->bundle_media);
  g_free (res->ingress_id);
  g_free (res->etag);
  g_free (res->id);
  g_free (res);
}

/* The registry ended the ingress session (replaced, deleted, no media, shutdown). */
static void
on_registry_close (gpointer transport, const char *reason)
{
  SkWhipResource *res = transport;

  res->ingress = NULL; /* already ended and freed */
  g_message ("WHIP session %.8s...: ended by the registry (%s)", res->id, reason);
  resource_destroy (res, NULL);
}

static void
on_answered (SkWhipSession *media, const char *sdp, const char *message, gpointer user_data)
{
  SkWhipResource *res = user_data;
  g_autoptr (SoupServerMessage) msg = take_pending (res);

  if (sdp == NULL) {
    if (msg != NULL) {
      add_cors (msg, SK_WHIP_ENDPOINT_METHODS);
      reply_problem (msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, "webrtc_failed",
                     "could not answer the offer: %s", message);
      soup_server_message_unpause (msg);
    }
    resource_destroy (res, SK_REASON_PUBLISHER_LOST);
    return;
  }
  if (msg == NULL)
    return;
  SoupMessageHeaders *h = soup_server_message_get_response_headers (msg);
  g_autofree char *location = g_strconcat (SK_WHIP_RESOURCE_PREFIX, res->id, NULL);
  soup_message_headers_replace (h, "Location", location);
  soup_message_headers_replace (h, "ETag", res->etag);
  soup_message_headers_replace (h, "Accept-Patch", "application/trickle-ice-sdpfrag");
  add_ice_server_links (res->server, h);
  add_cors (msg, SK_WHIP_ENDPOINT_METHODS);
  soup_server_message_set_status (msg, SOUP_STATUS_CREATED, NULL);
  soup_server_message_set_response (msg, "application/sdp", SOUP_MEMORY_COPY, sdp, strlen (sdp));
  soup_server_message_unpause (msg);
}

static void
on_media_failed (SkWhipSession *media, const char *message, gpointer user_data)
{
  SkWhipResource *res = user_data;

  g_message ("WHIP session %.8s...: %s", res->id, message);
  resource_destroy (res, SK_REASON_PUBLISHER_LOST);
}

static const SkWhipSessionCallbacks media_callbacks = {
  .answered = on_answered,
  .failed = on_media_failed,
};

/* ---------------------------------------------------------------------------------------- */
/* POST /whip, /whip/{key} */

static void
reply_options (SoupServerMessage *msg, const char *methods, gboolean endpoint)
{
  add_cors (msg, methods);
  SoupMessageHeaders *h = soup_server_message_get_response_headers (msg);
  if (endpoint)
    soup_message_headers_replace (h, "Accept-Post", "application/sdp");
  else
    soup_message_headers_replace (h, "Accept-Patch", "application/trickle-ice-sdpfrag");
  soup_server_message_set_status (msg, SOUP_STATUS_NO_CONTENT, NULL);
}

static char *
remote_address (SoupServerMessage *msg)
{
  const char *host = soup_server_message_get_remote_host (msg);
  return g_strdup (host != NULL ? host : "?");
}

static void
key_lookup_free (KeyLookup *lookup)
{
  g_signal_handler_disconnect (lookup->msg, lookup->finished_id);
  if (lookup->refresh_id != 0)
    sk_ingress_registry_cancel_refresh (lookup->server->registry, lookup->refresh_id);
  g_object_unref (lookup->msg);
  g_free (lookup->path_key);
  g_free (lookup);
}

static void handle_offer (SkWhipServer *self, SoupServerMessage *msg, const char *path_key,
                          gboolean key_looked_up);

static void
on_key_looked_up (const GError *error, gpointer user_data)
{
  KeyLookup *lookup = user_data;
  SkWhipServer *self = lookup->server;
  g_autoptr (SoupServerMessage) msg = g_object_ref (lookup->msg);
  g_autofree char *path_key = g_steal_pointer (&lookup->path_key);

  lookup->refresh_id = 0; /* answered: nothing to cancel */
  if (error != NULL)
    g_message ("WHIP: stream key lookup: %s", error->message);
  g_hash_table_remove (self->key_lookups, lookup);
  handle_offer (self, msg, path_key, TRUE);
  /* Answered now (else it stays paused until its session answers). */
  if (soup_server_message_get_status (msg) != 0)
    soup_server_message_unpause (msg);
}

/* The client went away while its key was looked up. */
static void
on_key_lookup_finished (SoupServerMessage *msg, gpointer user_data)
{
  KeyLookup *lookup = user_data;

  g_hash_table_remove (lookup->server->key_lookups, lookup);
}

static void
key_lookup_start (SkWhipServer *self, SoupServerMessage *msg, const char *path_key)
{
  KeyLookup *lookup = g_new0 (KeyLookup, 1);

  lookup->server = self;
  lookup->msg = g_object_ref (msg);
  lookup->path_key = g_strdup (path_key);
  lookup->finished_id
      = g_signal_connect (msg, "finished", G_CALLBACK (on_key_lookup_finished), lookup);
  g_hash_table_add (self->key_lookups, lookup);
  soup_server_message_pause (msg);
  lookup->refresh_id = sk_ingress_registry_refresh (self->registry, SK_WHIP_KEY_LOOKUP_TIMEOUT_MS,
                                                    on_key_looked_up, lookup);
}

static void
handle_offer (SkWhipServer *self, SoupServerMessage *msg, const char *path_key,
              gboolean key_looked_up)
{
  const char *method = soup_server_message_get_method (msg);
  g_autoptr (GError) error = NULL;

  if (g_strcmp0 (method, "OPTIONS") == 0) {
    reply_options (msg, SK_WHIP_ENDPOINT_METHODS, TRUE);
    return;
  }
  add_cors (msg, SK_WHIP_ENDPOINT_METHODS);
  if (g_strcmp0 (method, "POST") != 0) {
    soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Allow",
                                  SK_WHIP_ENDPOINT_METHODS);
    reply_problem (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method_not_allowed",
                   "use POST with an SDP offer");
    return;
  }

  /* The key: Bearer token (what OBS sends), else the path. Checked before the body is read. */
  const char *key = sk_http_get_bearer (msg);
  if (key == NULL)
    key = path_key;
  if (key == NULL) {
    reply_problem (msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized",
                   "missing Authorization: Bearer <stream key>");
    return;
  }
  if (!sk_ingress_registry_check_key (self->registry, SK_INPUT_WHIP, key, &error)) {
    if (!key_looked_up && g_error_matches (error, SK_ERROR, SK_ERROR_NOT_FOUND)
        && g_hash_table_size (self->key_lookups) < SK_WHIP_MAX_KEY_LOOKUPS) {
      key_lookup_start (self, msg, path_key);
      return;
    }
    reply_problem (msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized", "invalid stream key");
    return;
  }
  if (!sk_http_content_type_is (msg, "application/sdp")) {
    reply_problem (msg, SOUP_STATUS_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                   "the offer must be sent as application/sdp");
    return;
  }
  SoupMessageBody *body = soup_server_message_get_request_body (msg);
  if (body->length > SK_WHIP_MAX_OFFER_BYTES) {
    reply_problem (msg, SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE, "too_large",
                   "the offer exceeds %u bytes", SK_WHIP_MAX_OFFER_BYTES);
    return;
  }
  g_autoptr (GBytes) bytes = soup_message_body_flatten (body);
  g_autoptr (SkWhipOffer) offer
      = sk_whip_offer_parse (g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes), &error);
  if (offer == NULL) {
    reply_gerror (msg, error);
    return;
  }

  /* Only now: a valid offer replaces a live session of the same key. */
  SkWhipResource *res = g_new0 (SkWhipResource, 1);
  res->server = self;
  res->id = sk_cluster_new_resource_id (self->config->node_id);
  new_etag (res);
  res->mid_to_mline = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, NULL);
  res->ice_ufrag = g_strdup (offer->ice_ufrag);
  g_autofree char *remote = remote_address (msg);
  res->ingress = sk_ingress_registry_start_session (self->registry, SK_INPUT_WHIP, key, remote,
                                                    on_registry_close, res, &error);
  if (res->ingress == NULL) {
    reply_gerror (msg, error);
    g_hash_table_unref (res->mid_to_mline);
    g_free (res->ice_ufrag);
    g_free (res->etag);
    g_free (res->id);
    g_free (res);
    return;
  }
  res->ingress_id = g_strdup (sk_ingress_session_get_ingress_id (res->ingress));
  g_hash_table_insert (self->resources, res->id, res);
  for (guint i = 0; i < gst_sdp_message_medias_len (offer->sdp); i++) {
    const char *mid
        = gst_sdp_media_get_attribute_val (gst_sdp_message_get_media (offer->sdp, i), "mid");
    if (mid != NULL && g_hash_table_size (res->mid_to_mline) < 16)
      g_hash_table_insert (res->mid_to_mline, g_strdup (mid), GUINT_TO_POINTER (i + 1));
    if (i == 0) {
      res->bundle_mid = g_strdup (mid != NULL ? mid : "0");
      res->bundle_media
          = g_strdup (gst_sdp_media_get_media (gst_sdp_message_get_media (offer->sdp, 0)));
    }
  }

  g_autofree char *name = g_strdup_printf ("whip-%.8s", res->id);
  set_pending (res, msg);
  res->media = sk_whip_session_new (name, offer, res->ingress, self->config, &media_callbacks, res,
                                    &error);
  if (res->media == NULL) {
    SoupServerMessage *pending = take_pending (res); /* == @msg: we answer it here */

    reply_gerror (msg, error);
    soup_server_message_unpause (msg);
    resource_destroy (res, SK_REASON_PUBLISHER_LOST);
    g_object_unref (pending);
    return;
  }
  g_message ("WHIP session %.8s... for ingress %s: offer with %s%s%s, %u candidates", res->id,
             res->ingress_id,
             offer->video.mline >= 0 ? sk_whip_codec_to_string (offer->video.codec) : "",
             offer->video.mline >= 0 && offer->audio.mline >= 0 ? " + " : "",
             offer->audio.mline >= 0 ? sk_whip_codec_to_string (offer->audio.codec) : "",
             offer->n_candidates);
}

/* ---------------------------------------------------------------------------------------- */
/* PATCH /whip/session/{id}: trickle (RFC 8840 sdpfrag) and ICE restart */

/* The answer to an ICE restart: our new credentials and candidates, as an sdpfrag for the
 * bundle's m-line (RFC 9725 §4.4.2), with a new ETag. */
static void
handle_ice_restart (SkWhipResource *res, SoupServerMessage *msg, const SkTrickleFragment *frag)
{
  g_autofree char *ufrag = NULL, *pwd = NULL, *candidates = NULL;
  g_autoptr (GError) error = NULL;

  if (!sk_whip_session_restart_ice (res->media, frag->ufrag, frag->pwd, &ufrag, &pwd, &candidates,
                                    &error)) {
    /* Nothing was touched unless libnice failed halfway: the current ICE session goes on. */
    g_message ("WHIP session %.8s...: ICE restart failed: %s", res->id, error->message);
    reply_problem (msg,
                   error->code == SK_ERROR_CONFLICT ? SOUP_STATUS_CONFLICT
                                                    : SOUP_STATUS_INTERNAL_SERVER_ERROR,
                   "ice_restart_failed", "ICE restart failed: %s", error->message);
    return;
  }
  for (guint i = 0; i < frag->candidates->len; i++)
    sk_whip_session_add_candidate (res->media, g_array_index (frag->mlines, guint, i),
                                   g_ptr_array_index (frag->candidates, i));
  g_free (res->ice_ufrag);
  res->ice_ufrag = g_strdup (frag->ufrag);
  new_etag (res);
  g_message ("WHIP session %.8s...: ICE restart, %u new remote candidates", res->id,
             frag->candidates->len);

  GString *body = g_string_new (NULL);
  g_string_append_printf (body, "a=ice-ufrag:%s\r\na=ice-pwd:%s\r\n", ufrag, pwd);
  g_string_append_printf (body, "m=%s 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:%s\r\n", res->bundle_media,
                          res->bundle_mid);
  g_string_append (body, candidates);
  g_string_append (body, "a=end-of-candidates\r\n");
  SoupMessageHeaders *h = soup_server_message_get_response_headers (msg);
  soup_message_headers_replace (h, "ETag", res->etag);
  soup_server_message_set_status (msg, SOUP_STATUS_OK, NULL);
  gsize len = body->len;
  soup_server_message_set_response (msg, "application/trickle-ice-sdpfrag", SOUP_MEMORY_TAKE,
                                    g_string_free (body, FALSE), len);
}

static void
handle_patch (SkWhipResource *res, SoupServerMessage *msg)
{
  gboolean wildcard = FALSE;
  g_autoptr (GBytes) bytes = sk_http_read_trickle_patch (msg, res->etag, SK_WHIP_MAX_PATCH_BYTES,
                                                         reply_problem, &wildcard);

  if (bytes == NULL)
    return;
  g_auto (SkTrickleFragment) frag = { 0 };
  g_autoptr (GError) error = NULL;
  if (!sk_webrtc_parse_trickle_fragment (g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes),
                                         res->mid_to_mline, SK_WHIP_MAX_PATCH_CANDS, &frag,
                                         &error)) {
    reply_problem (msg, SOUP_STATUS_BAD_REQUEST, "invalid", "%s", error->message);
    return;
  }
  if (frag.stop == SK_TRICKLE_UNKNOWN_MID) {
    reply_problem (msg, SOUP_STATUS_UNPROCESSABLE_ENTITY, "unknown_mid",
                   "the fragment names a mid that is not in the offer");
    return;
  }
  if (frag.stop == SK_TRICKLE_TOO_MANY_CANDIDATES) {
    reply_problem (msg, SOUP_STATUS_BAD_REQUEST, "invalid", "too many candidates");
    return;
  }
  const char *ufrag = frag.ufrag, *pwd = frag.pwd;
  GPtrArray *cands = frag.candidates;

  /* New credentials = an ICE restart (RFC 9725 §4.4.2), which must come with If-Match: "*". */
  gboolean restart = ufrag != NULL && g_strcmp0 (ufrag, res->ice_ufrag) != 0;
  if (restart) {
    if (!wildcard) {
      reply_problem (msg, SOUP_STATUS_PRECONDITION_FAILED, "etag_mismatch",
                     "an ICE restart needs If-Match: \"*\"");
      return;
    }
    if (pwd == NULL || *ufrag == '\0' || *pwd == '\0' || strlen (ufrag) > 256
        || strlen (pwd) > 256) {
      reply_problem (msg, SOUP_STATUS_BAD_REQUEST, "invalid",
                     "an ICE restart needs a=ice-ufrag and a=ice-pwd");
      return;
    }
    handle_ice_restart (res, msg, &frag);
    return;
  }
  if (wildcard && ufrag == NULL && cands->len == 0) {
    reply_problem (msg, SOUP_STATUS_BAD_REQUEST, "invalid",
                   "If-Match: \"*\" is for an ICE restart: send a=ice-ufrag and a=ice-pwd");
    return;
  }
  for (guint i = 0; i < cands->len; i++)
    sk_whip_session_add_candidate (res->media, g_array_index (frag.mlines, guint, i),
                                   g_ptr_array_index (cands, i));
  soup_server_message_set_status (msg, SOUP_STATUS_NO_CONTENT, NULL);
}

static void
handle_resource (SkWhipServer *self, SoupServerMessage *msg, const char *id)
{
  const char *method = soup_server_message_get_method (msg);

  if (g_strcmp0 (method, "OPTIONS") == 0) {
    reply_options (msg, SK_WHIP_RESOURCE_METHODS, FALSE);
    return;
  }
  SkWhipResource *res = g_hash_table_lookup (self->resources, id);
  /* Another node's session (the load balancer picked us): that node answers. */
  if (res == NULL && self->rooms != NULL
      && sk_cluster_forward (sk_room_manager_get_cluster (self->rooms), msg, id))
    return;
  add_cors (msg, SK_WHIP_RESOURCE_METHODS);
  if (res == NULL) {
    reply_problem (msg, SOUP_STATUS_NOT_FOUND, "not_found", "no such WHIP session");
    return;
  }
  if (g_strcmp0 (method, "DELETE") == 0) {
    g_message ("WHIP session %.8s...: DELETE", res->id);
    resource_destroy (res, SK_REASON_CLIENT_INITIATED);
    soup_server_message_set_status (msg, SOUP_STATUS_OK, NULL);
  } else if (g_strcmp0 (method, "PATCH") == 0) {
    handle_patch (res, msg);
  } else {
    soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Allow",
                                  SK_WHIP_RESOURCE_METHODS);
    reply_problem (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method_not_allowed",
                   "use PATCH or DELETE on a WHIP session");
  }
}

static void
whip_handler (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
              gpointer user_data)
{
  SkWhipServer *self = user_data;

  if (g_str_equal (path, SK_WHIP_PREFIX) || g_str_equal (path, SK_WHIP_PREFIX "/")) {
    handle_offer (self, msg, NULL, FALSE);
  } else if (g_str_has_prefix (path, SK_WHIP_RESOURCE_PREFIX)) {
    handle_resource (self, msg, path + strlen (SK_WHIP_RESOURCE_PREFIX));
  } else {
    const char *key = path + strlen (SK_WHIP_PREFIX "/");
    if (strchr (key, '/') != NULL) {
      reply_problem (msg, SOUP_STATUS_NOT_FOUND, "not_found", "no such WHIP endpoint");
      return;
    }
    handle_offer (self, msg, key, FALSE);
  }
}

/* ---------------------------------------------------------------------------------------- */

/* dtlsdec makes its self-signed certificate (RSA, ~0.4 s here) once per process, on first use:
 * make it off the main loop at start rather than inside the first POST. */
static gpointer
warm_up_dtls (gpointer data)
{
  GstElement *dec = gst_element_factory_make ("dtlsdec", NULL);
  if (dec != NULL)
    gst_object_unref (gst_object_ref_sink (dec));
  return NULL;
}

SkWhipServer *
sk_whip_server_new (const SkConfig *config, SkIngressRegistry *registry)
{
  /* Load the plugins a session needs now, not during the first publisher's POST (loading
   * them there costs that POST ~150 ms). */
  static const char *const plugins[]
      = { "webrtc", "dtls", "srtp", "nice", "rtpmanager", "rtp", "videoparsersbad", "app" };
  for (guint i = 0; i < G_N_ELEMENTS (plugins); i++) {
    GstPlugin *plugin = gst_plugin_load_by_name (plugins[i]);
    if (plugin == NULL)
      g_warning ("GStreamer plugin %s is missing: WHIP ingest will fail", plugins[i]);
    else
      gst_object_unref (plugin);
  }

  SkWhipServer *self = g_new0 (SkWhipServer, 1);
  self->config = config;
  self->registry = registry;
  self->resources = g_hash_table_new (g_str_hash, g_str_equal);
  self->key_lookups = g_hash_table_new_full (g_direct_hash, g_direct_equal,
                                             (GDestroyNotify)key_lookup_free, NULL);
  self->warm_up = g_thread_new ("whip-warm-up", warm_up_dtls, NULL);
  return self;
}

void
sk_whip_server_free (SkWhipServer *self)
{
  if (self == NULL)
    return;
  GHashTableIter it;
  gpointer value;
  while (TRUE) {
    g_hash_table_iter_init (&it, self->resources);
    if (!g_hash_table_iter_next (&it, NULL, &value))
      break;
    resource_destroy (value, SK_REASON_SERVER_SHUTDOWN);
  }
  g_hash_table_unref (self->resources);
  g_hash_table_iter_init (&it, self->key_lookups);
  while (g_hash_table_iter_next (&it, &value, NULL)) {
    KeyLookup *lookup = value;

    reply_problem (lookup->msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "unavailable",
                   "the node is shutting down");
    soup_server_message_unpause (lookup->msg);
  }
  g_hash_table_unref (self->key_lookups);
  g_clear_pointer (&self->internal, sk_whip_internal_free);
  g_thread_join (self->warm_up);
  g_free (self);
}

void
sk_whip_server_attach_http (SkWhipServer *self, SoupServer *server)
{
  soup_server_add_handler (server, SK_WHIP_PREFIX, whip_handler, self, NULL);
  if (self->internal != NULL)
    sk_whip_internal_attach_http (self->internal, server);
}

void
sk_whip_server_enable_internal (SkWhipServer *self, SkRoomManager *rooms)
{
  g_return_if_fail (self->internal == NULL);
  self->rooms = rooms;
  self->internal = sk_whip_internal_new (self->config, rooms);
}

SkWhipInternal *
sk_whip_server_get_internal (SkWhipServer *self)
{
  return self->internal;
}

guint
sk_whip_server_get_n_sessions (SkWhipServer *self)
{
  return g_hash_table_size (self->resources);
}
