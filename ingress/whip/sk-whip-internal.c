/*
 * streamkeeper: the cluster's internal publish endpoint (see sk-whip-internal.h).
 *
 * One SkInternalPub per remote participant of a room hosted here, keyed by room and
 * participant sid. Its media session comes and goes (each POST replaces it, a dead one is
 * dropped); the participant stays until DELETE, the cluster's end_node, or the room manager
 * evicting it (identity replaced, room lost, shutdown).
 */
#include "ingress/whip/sk-whip-internal.h"

#include <string.h>

#include "common/sk-common.h"
#include "common/sk-http.h"
#include "ingress/whip/sk-whip-offer.h"
#include "ingress/whip/sk-whip-participant.h"
#include "ingress/whip/sk-whip-session.h"

#define ROOMS_PREFIX SK_WHIP_INTERNAL_PREFIX "/rooms/"
#define PUBLISH_SUFFIX "/publish"
#define PUBLICATIONS_PREFIX SK_WHIP_INTERNAL_PREFIX "/publications/"
#define PARTICIPANT_HEADER "X-Streamkeeper-Participant"
#define REASON_HEADER "X-Streamkeeper-Reason"

typedef struct _SkInternalPub SkInternalPub;

struct _SkWhipInternal {
  const SkConfig *config;
  SkRoomManager *rooms;
  GHashTable *by_key; /* "room/PA_…" → SkInternalPub (owned) */
  GHashTable *by_id;  /* publication id → SkInternalPub (borrowed) */
};

struct _SkInternalPub {
  SkWhipInternal *self;
  char *key;
  char *id; /* of the current POST; a new one each time */
  SkParticipant *participant;
  SkWhipParticipant *spec; /* the newest header */
  SkTrack *tracks[2];      /* refs, by SkTrackKind: what we published for it */

  SkWhipSession *media; /* NULL: detached */
  GstClockTime base_time;
  gint64 last_media_us;
  guint timeout_id;

  SoupServerMessage *pending; /* the POST waiting for the answer */
  gulong pending_finished_id;
};

static const char *const leave_reasons[] = {
  SK_REASON_CLIENT_INITIATED, SK_REASON_PUBLISHER_LOST,  SK_REASON_NODE_FAILURE,
  SK_REASON_REPLACED,         SK_REASON_INGRESS_DELETED, SK_REASON_SERVER_SHUTDOWN,
};

/* ---------------------------------------------------------------------------------------- */
/* Publications */

static SoupServerMessage *
pub_take_pending (SkInternalPub *pub)
{
  SoupServerMessage *msg = pub->pending;

  if (msg != NULL) {
    g_signal_handler_disconnect (msg, pub->pending_finished_id);
    pub->pending_finished_id = 0;
    pub->pending = NULL;
  }
  return msg;
}

/* Drops the media session without a word to the room: the participant keeps its tracks. */
static void
pub_detach (SkInternalPub *pub, const char *why)
{
  g_autoptr (SoupServerMessage) msg = pub_take_pending (pub);

  if (msg != NULL) {
    sk_http_reply_error (msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "session_ended",
                         "the session ended before it was answered: %s", why);
    soup_server_message_unpause (msg);
  }
  g_clear_handle_id (&pub->timeout_id, g_source_remove);
  if (pub->media == NULL)
    return;
  /* Synchronous: no streaming thread pushes into the tracks after this. */
  g_clear_pointer (&pub->media, sk_whip_session_free);
  g_message ("remote participant %s (from %s): media detached: %s", pub->spec->sid,
             pub->spec->ingress_node, why);
}

/* Forgets @pub (the participant is gone or left to the room manager). */
static void
pub_free (SkInternalPub *pub)
{
  SkWhipInternal *self = pub->self;

  pub_detach (pub, "publication closed");
  if (pub->id != NULL)
    g_hash_table_remove (self->by_id, pub->id);
  g_hash_table_steal (self->by_key, pub->key);
  for (guint i = 0; i < G_N_ELEMENTS (pub->tracks); i++)
    g_clear_pointer (&pub->tracks[i], sk_track_unref);
  sk_whip_participant_free (pub->spec);
  g_free (pub->id);
  g_free (pub->key);
  g_free (pub);
}

/* The participant leaves the room for good. */
static void
pub_leave (SkInternalPub *pub, const char *reason)
{
  SkParticipant *participant = pub->participant;

  g_message ("remote participant %s (from %s) leaves: %s", pub->spec->sid, pub->spec->ingress_node,
             reason);
  pub_detach (pub, reason);
  pub_free (pub);
  sk_participant_leave (participant, reason);
}

/* The room manager removed the participant (replaced, room lost, shutdown): it wrote what
 * was owed; we only drop the media. */
static void
on_evicted (SkParticipant *participant, const char *reason, gpointer user_data)
{
  SkInternalPub *pub = user_data;

  g_message ("remote participant %s: removed by the room (%s)", pub->spec->sid, reason);
  pub_free (pub);
}

static gboolean
on_media_timeout (gpointer data)
{
  SkInternalPub *pub = data;
  gint64 idle_ms = (g_get_monotonic_time () - pub->last_media_us) / 1000;

  if (idle_ms < pub->self->config->publisher_timeout_ms)
    return G_SOURCE_CONTINUE;
  pub->timeout_id = 0;
  pub_detach (pub, "no media");
  return G_SOURCE_REMOVE;
}

/* SkWhipSessionTarget: the media session publishes into the participant's tracks with the
 * sids its ingress node chose. */
static SkTrack *
target_publish_track (gpointer data, SkTrackKind kind, GstCaps *caps, GError **error)
{
  SkInternalPub *pub = data;
  const SkWhipParticipantTrack *spec = sk_whip_participant_get_track (pub->spec, kind);

  if (spec == NULL) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "no %s track was announced",
                 sk_track_kind_to_string (kind));
    return NULL;
  }
  SkTrack *track = sk_participant_publish_track_with_sid (pub->participant, spec->sid, kind, caps);
  SK_TIMING ("remote participant %s: %s track %s", pub->spec->sid, sk_track_kind_to_string (kind),
             track != NULL ? "published" : "refused");
  if (track == NULL) {
    g_set_error (error, SK_ERROR, SK_ERROR_CONFLICT, "track %s cannot be published", spec->sid);
    return NULL;
  }
  if (pub->tracks[kind] != track) {
    g_clear_pointer (&pub->tracks[kind], sk_track_unref);
    pub->tracks[kind] = sk_track_ref (track);
  }
  return track;
}

static void
target_publishing (gpointer data)
{
  SkInternalPub *pub = data;

  g_message ("remote participant %s (from %s): media flowing", pub->spec->sid,
             pub->spec->ingress_node);
}

static void
target_media_received (gpointer data)
{
  SkInternalPub *pub = data;

  pub->last_media_us = g_get_monotonic_time ();
}

static const SkWhipSessionTarget pub_target = {
  .publish_track = target_publish_track,
  .publishing = target_publishing,
  .media_received = target_media_received,
};

/* A track's caps before its first sample: what the offer's codec says. */
static GstCaps *
caps_for_offer_codec (SkWhipCodec codec)
{
  switch (codec) {
    case SK_WHIP_CODEC_H264:
      return gst_caps_new_simple ("video/x-h264", "stream-format", G_TYPE_STRING, "byte-stream",
                                  "alignment", G_TYPE_STRING, "au", NULL);
    case SK_WHIP_CODEC_VP8:
      return gst_caps_new_empty_simple ("video/x-vp8");
    case SK_WHIP_CODEC_OPUS:
      return gst_caps_new_empty_simple ("audio/x-opus");
    case SK_WHIP_CODEC_NONE:
    default:
      return NULL;
  }
}

/*
 * The ingress node POSTs once its tracks carry media (their caps are known there, and it
 * sends from their cached GOP as soon as connected): they are published now, rather than
 * after ICE, DTLS and the jitter buffer (~200 ms later). The session's first samples re-bind
 * them with their exact caps (same sids: no second TrackPublished).
 */
static void
pub_publish_announced (SkInternalPub *pub, const SkWhipOffer *offer)
{
  for (guint i = 0; i < pub->spec->n_tracks; i++) {
    const SkWhipParticipantTrack *t = &pub->spec->tracks[i];
    const SkWhipOfferMedia *om = t->kind == SK_TRACK_KIND_VIDEO ? &offer->video : &offer->audio;
    g_autoptr (GstCaps) caps = caps_for_offer_codec (om->codec);

    if (pub->tracks[t->kind] != NULL || caps == NULL)
      continue;
    SkTrack *track
        = sk_participant_publish_track_with_sid (pub->participant, t->sid, t->kind, caps);
    if (track != NULL)
      pub->tracks[t->kind] = sk_track_ref (track);
  }
}

static void
on_answered (SkWhipSession *media, const char *sdp, const char *message, gpointer user_data)
{
  SkInternalPub *pub = user_data;
  g_autoptr (SoupServerMessage) msg = pub_take_pending (pub);

  if (sdp == NULL) {
    if (msg != NULL) {
      sk_http_reply_error (msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, "webrtc_failed",
                           "could not answer the offer: %s", message);
      soup_server_message_unpause (msg);
    }
    pub_detach (pub, message);
    return;
  }
  if (msg == NULL)
    return;
  SoupMessageHeaders *h = soup_server_message_get_response_headers (msg);
  g_autofree char *location = g_strconcat (PUBLICATIONS_PREFIX, pub->id, NULL);
  soup_message_headers_replace (h, "Location", location);
  soup_server_message_set_status (msg, SOUP_STATUS_CREATED, NULL);
  soup_server_message_set_response (msg, "application/sdp", SOUP_MEMORY_COPY, sdp, strlen (sdp));
  soup_server_message_unpause (msg);
}

static void
on_media_failed (SkWhipSession *media, const char *message, gpointer user_data)
{
  pub_detach (user_data, message);
}

static const SkWhipSessionCallbacks pub_callbacks = {
  .answered = on_answered,
  .failed = on_media_failed,
};

static void
on_pending_finished (SoupServerMessage *msg, gpointer user_data)
{
  SkInternalPub *pub = user_data;

  /* The ingress node gave up before the answer; it will POST again. */
  if (pub->pending == msg) {
    SoupServerMessage *taken = pub_take_pending (pub);

    pub_detach (pub, "the POST went away before the answer");
    g_object_unref (taken);
  }
}

/* ---------------------------------------------------------------------------------------- */
/* HTTP */

/* 403 on a node without a cluster secret, 401 without the right one (constant time). */
static gboolean
check_auth (SkWhipInternal *self, SoupServerMessage *msg)
{
  const char *secret = self->config->cluster_secret;

  if (secret == NULL || secret[0] == '\0') {
    sk_http_reply_error (msg, SOUP_STATUS_FORBIDDEN, "forbidden",
                         "this node has no cluster secret: internal endpoints are disabled");
    return FALSE;
  }
  const char *bearer = sk_http_get_bearer (msg);
  if (bearer == NULL || !sk_secure_equal (bearer, secret)) {
    sk_http_reply_error (msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized",
                         "missing or wrong cluster secret");
    return FALSE;
  }
  return TRUE;
}

/* Each m-line of the offer must carry the track announced at its index. */
static gboolean
offer_matches_tracks (const SkWhipOffer *offer, const SkWhipParticipant *spec, GError **error)
{
  guint n_media = gst_sdp_message_medias_len (offer->sdp);

  if (n_media != spec->n_tracks) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                 "the offer has %u m-lines for %u announced tracks", n_media, spec->n_tracks);
    return FALSE;
  }
  for (guint i = 0; i < spec->n_tracks; i++) {
    const SkWhipOfferMedia *om
        = spec->tracks[i].kind == SK_TRACK_KIND_VIDEO ? &offer->video : &offer->audio;
    if (om->mline != (int)i) {
      g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                   "m-line %u does not carry the announced %s track %s", i,
                   sk_track_kind_to_string (spec->tracks[i].kind), spec->tracks[i].sid);
      return FALSE;
    }
  }
  return TRUE;
}

static void
handle_publish (SkWhipInternal *self, SoupServerMessage *msg, const char *room)
{
  g_autoptr (GError) error = NULL;
  SoupMessageHeaders *req = soup_server_message_get_request_headers (msg);

  if (g_strcmp0 (soup_server_message_get_method (msg), "POST") != 0) {
    soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Allow", "POST");
    sk_http_reply_error (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method_not_allowed", "use POST");
    return;
  }
  if (!check_auth (self, msg))
    return;
  const char *ct = soup_message_headers_get_content_type (req, NULL);
  if (ct == NULL || g_ascii_strcasecmp (ct, "application/sdp") != 0) {
    sk_http_reply_error (msg, SOUP_STATUS_UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type",
                         "the offer must be sent as application/sdp");
    return;
  }
  const char *header = soup_message_headers_get_one (req, PARTICIPANT_HEADER);
  g_autoptr (SkWhipParticipant) spec
      = sk_whip_participant_parse (header, header != NULL ? strlen (header) : 0, &error);
  if (spec == NULL) {
    sk_http_reply_gerror (msg, error);
    return;
  }
  SoupMessageBody *body = soup_server_message_get_request_body (msg);
  if (body->length > SK_WHIP_MAX_OFFER_BYTES) {
    sk_http_reply_error (msg, SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE, "too_large",
                         "the offer exceeds %u bytes", SK_WHIP_MAX_OFFER_BYTES);
    return;
  }
  g_autoptr (GBytes) bytes = soup_message_body_flatten (body);
  g_autoptr (SkWhipOffer) offer
      = sk_whip_offer_parse (g_bytes_get_data (bytes, NULL), g_bytes_get_size (bytes), &error);
  if (offer == NULL || !offer_matches_tracks (offer, spec, &error)) {
    sk_http_reply_gerror (msg, error);
    return;
  }

  /* Everything checked: join (or re-attach) the participant. */
  SK_TIMING ("remote participant %s: POST for room %s", spec->sid, room);
  g_autofree char *key = g_strconcat (room, "/", spec->sid, NULL);
  SkInternalPub *pub = g_hash_table_lookup (self->by_key, key);
  gboolean created = pub == NULL;
  if (created) {
    pub = g_new0 (SkInternalPub, 1);
    pub->self = self;
    pub->key = g_steal_pointer (&key);
    pub->base_time = GST_CLOCK_TIME_NONE;
  } else {
    /* A new session of a participant we know replaces the old one, without events. */
    pub_detach (pub, "replaced by a new session");
  }
  SkParticipant *participant
      = sk_room_manager_join_remote (self->rooms, room, spec->sid, spec->identity, spec->name,
                                     spec->kind, spec->ingress_node, on_evicted, pub, &error);
  if (participant == NULL) {
    sk_http_reply_gerror (msg, error);
    if (created)
      g_free (pub->key), g_free (pub);
    return;
  }
  if (created) {
    pub->participant = participant;
    g_hash_table_insert (self->by_key, pub->key, pub);
  }
  g_return_if_fail (pub->participant == participant);

  /* Tracks the ingress node no longer announces are gone. */
  for (guint k = 0; k < G_N_ELEMENTS (pub->tracks); k++) {
    const SkWhipParticipantTrack *t = sk_whip_participant_get_track (spec, k);
    if (pub->tracks[k] != NULL
        && (t == NULL || strcmp (t->sid, sk_track_get_sid (pub->tracks[k])) != 0)) {
      sk_participant_unpublish_track (participant, pub->tracks[k], SK_REASON_CLIENT_INITIATED);
      g_clear_pointer (&pub->tracks[k], sk_track_unref);
    }
  }
  sk_whip_participant_free (pub->spec);
  pub->spec = g_steal_pointer (&spec);
  pub_publish_announced (pub, offer);

  /* A new id per session; the newest one stays valid (for DELETE) while detached. */
  if (pub->id != NULL)
    g_hash_table_remove (self->by_id, pub->id);
  g_free (pub->id);
  pub->id = sk_secret_new (128);
  g_hash_table_insert (self->by_id, pub->id, pub);
  g_autofree char *name = g_strdup_printf ("internal-%.8s", pub->id);
  pub->pending = g_object_ref (msg);
  pub->pending_finished_id
      = g_signal_connect (msg, "finished", G_CALLBACK (on_pending_finished), pub);
  soup_server_message_pause (msg);
  pub->media = sk_whip_session_new_for_target (name, offer, &pub_target, pub, pub->base_time,
                                               self->config, &pub_callbacks, pub, &error);
  if (pub->media == NULL) {
    SoupServerMessage *pending = pub_take_pending (pub); /* == @msg: we answer it here */

    sk_http_reply_gerror (msg, error);
    soup_server_message_unpause (msg);
    g_object_unref (pending);
    return; /* the participant stays, detached: the ingress node retries */
  }
  pub->base_time = sk_whip_session_get_base_time (pub->media);
  pub->last_media_us = g_get_monotonic_time ();
  pub->timeout_id
      = g_timeout_add (MAX (self->config->publisher_timeout_ms / 4, 25), on_media_timeout, pub);
  g_message ("remote participant %s (%s, from %s) publishing into room %s: %u tracks%s",
             pub->spec->sid, pub->spec->identity, pub->spec->ingress_node, room,
             pub->spec->n_tracks, created ? "" : " (new session)");
}

static void
handle_publication (SkWhipInternal *self, SoupServerMessage *msg, const char *id)
{
  if (g_strcmp0 (soup_server_message_get_method (msg), "DELETE") != 0) {
    soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Allow",
                                  "DELETE");
    sk_http_reply_error (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method_not_allowed", "use DELETE");
    return;
  }
  if (!check_auth (self, msg))
    return;
  const char *reason
      = soup_message_headers_get_one (soup_server_message_get_request_headers (msg), REASON_HEADER);
  const char *known = reason == NULL ? SK_REASON_CLIENT_INITIATED : NULL;
  for (guint i = 0; known == NULL && i < G_N_ELEMENTS (leave_reasons); i++)
    if (strcmp (reason, leave_reasons[i]) == 0)
      known = leave_reasons[i];
  if (known == NULL) {
    sk_http_reply_error (msg, SOUP_STATUS_BAD_REQUEST, "invalid",
                         REASON_HEADER
                         " must be one of client_initiated, publisher_lost, node_failure, "
                         "replaced, ingress_deleted, server_shutdown");
    return;
  }
  SkInternalPub *pub = g_hash_table_lookup (self->by_id, id);
  if (pub == NULL) {
    sk_http_reply_error (msg, SOUP_STATUS_NOT_FOUND, "not_found", "no such publication");
    return;
  }
  pub_leave (pub, known);
  soup_server_message_set_status (msg, SOUP_STATUS_NO_CONTENT, NULL);
}

static void
internal_handler (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                  gpointer user_data)
{
  SkWhipInternal *self = user_data;

  if (g_str_has_prefix (path, ROOMS_PREFIX) && g_str_has_suffix (path, PUBLISH_SUFFIX)
      && strlen (path) > strlen (ROOMS_PREFIX PUBLISH_SUFFIX)) {
    g_autofree char *room = g_strndup (path + strlen (ROOMS_PREFIX),
                                       strlen (path) - strlen (ROOMS_PREFIX PUBLISH_SUFFIX));
    if (strchr (room, '/') == NULL) {
      handle_publish (self, msg, room);
      return;
    }
  } else if (g_str_has_prefix (path, PUBLICATIONS_PREFIX)
             && strchr (path + strlen (PUBLICATIONS_PREFIX), '/') == NULL) {
    handle_publication (self, msg, path + strlen (PUBLICATIONS_PREFIX));
    return;
  }
  sk_http_reply_error (msg, SOUP_STATUS_NOT_FOUND, "not_found", "no such internal endpoint");
}

/* ---------------------------------------------------------------------------------------- */

SkWhipInternal *
sk_whip_internal_new (const SkConfig *config, SkRoomManager *rooms)
{
  SkWhipInternal *self = g_new0 (SkWhipInternal, 1);

  self->config = config;
  self->rooms = rooms;
  self->by_key = g_hash_table_new (g_str_hash, g_str_equal);
  self->by_id = g_hash_table_new (g_str_hash, g_str_equal);
  return self;
}

void
sk_whip_internal_free (SkWhipInternal *self)
{
  if (self == NULL)
    return;
  GHashTableIter it;
  gpointer value;
  while (TRUE) {
    g_hash_table_iter_init (&it, self->by_key);
    if (!g_hash_table_iter_next (&it, NULL, &value))
      break;
    /* The participants stay the room manager's (its shutdown wrote their way out, or it is
     * freed right after us and never calls back). */
    SkInternalPub *pub = value;
    pub_free (pub);
  }
  g_hash_table_unref (self->by_id);
  g_hash_table_unref (self->by_key);
  g_free (self);
}

void
sk_whip_internal_attach_http (SkWhipInternal *self, SoupServer *server)
{
  soup_server_add_handler (server, SK_WHIP_INTERNAL_PREFIX, internal_handler, self, NULL);
}

guint
sk_whip_internal_get_n_publications (SkWhipInternal *self)
{
  return g_hash_table_size (self->by_key);
}

guint
sk_whip_internal_get_n_attached (SkWhipInternal *self)
{
  GHashTableIter it;
  gpointer value;
  guint n = 0;

  g_hash_table_iter_init (&it, self->by_key);
  while (g_hash_table_iter_next (&it, NULL, &value))
    n += ((SkInternalPub *)value)->media != NULL;
  return n;
}

guint
sk_whip_internal_end_node (SkWhipInternal *self, const char *node_id, const char *reason)
{
  g_autoptr (GPtrArray) gone = g_ptr_array_new ();
  GHashTableIter it;
  gpointer value;
  guint n;

  g_hash_table_iter_init (&it, self->by_key);
  while (g_hash_table_iter_next (&it, NULL, &value)) {
    SkInternalPub *pub = value;
    if (g_strcmp0 (pub->spec->ingress_node, node_id) == 0)
      g_ptr_array_add (gone, pub);
  }
  n = gone->len;
  for (guint i = 0; i < gone->len; i++)
    pub_leave (g_ptr_array_index (gone, i), reason != NULL ? reason : SK_REASON_NODE_FAILURE);
  return n;
}

void
sk_whip_internal_detach_all (SkWhipInternal *self)
{
  GHashTableIter it;
  gpointer value;

  g_hash_table_iter_init (&it, self->by_key);
  while (g_hash_table_iter_next (&it, NULL, &value))
    pub_detach (value, "detached by the node");
}
