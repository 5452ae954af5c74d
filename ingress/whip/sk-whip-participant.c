/* streamkeeper: validating the X-Streamkeeper-Participant header (sk-whip-participant.h). */
#include "ingress/whip/sk-whip-participant.h"

#include <string.h>

#include <json-glib/json-glib.h>

#include "common/sk-common.h"

/* Bounds of the fields, in bytes; the room manager checks identity and name again. */
#define SID_MAX 64
#define TEXT_MAX 256
#define KIND_MAX 32
#define NODE_MAX 64

static gboolean
sid_is_valid (const char *sid, const char *prefix)
{
  gsize len = strlen (sid);

  if (len <= strlen (prefix) || len > SID_MAX || !g_str_has_prefix (sid, prefix))
    return FALSE;
  for (gsize i = 0; i < len; i++)
    if (!g_ascii_isalnum (sid[i]) && sid[i] != '_')
      return FALSE;
  return TRUE;
}

/* A token of [a-z0-9_] (participant kind) or of node-id characters ([A-Za-z0-9._-]). */
static gboolean
token_is_valid (const char *s, gsize max, gboolean node_id)
{
  gsize len = strlen (s);

  if (len == 0 || len > max)
    return FALSE;
  for (gsize i = 0; i < len; i++) {
    char c = s[i];
    gboolean ok = node_id ? g_ascii_isalnum (c) || c == '.' || c == '-' || c == '_'
                          : g_ascii_islower (c) || g_ascii_isdigit (c) || c == '_';
    if (!ok)
      return FALSE;
  }
  return TRUE;
}

/* A string member of @o, or NULL (absent or not a string). */
static const char *
get_string (JsonObject *o, const char *member)
{
  JsonNode *node = json_object_get_member (o, member);

  if (node == NULL || !JSON_NODE_HOLDS_VALUE (node)
      || json_node_get_value_type (node) != G_TYPE_STRING)
    return NULL;
  return json_node_get_string (node);
}

static gboolean
parse_tracks (JsonObject *o, SkWhipParticipant *p, GError **error)
{
  JsonNode *node = json_object_get_member (o, "tracks");

  if (node == NULL || !JSON_NODE_HOLDS_ARRAY (node)) {
    g_set_error_literal (error, SK_ERROR, SK_ERROR_INVALID, "\"tracks\" must be an array");
    return FALSE;
  }
  JsonArray *tracks = json_node_get_array (node);
  guint n = json_array_get_length (tracks);
  if (n == 0 || n > SK_WHIP_PARTICIPANT_MAX_TRACKS) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "\"tracks\" must have 1 to %d entries",
                 SK_WHIP_PARTICIPANT_MAX_TRACKS);
    return FALSE;
  }
  for (guint i = 0; i < n; i++) {
    JsonNode *tn = json_array_get_element (tracks, i);
    if (!JSON_NODE_HOLDS_OBJECT (tn)) {
      g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "track %u is not an object", i);
      return FALSE;
    }
    JsonObject *to = json_node_get_object (tn);
    const char *sid = get_string (to, "sid");
    const char *kind = get_string (to, "kind");
    if (sid == NULL || !sid_is_valid (sid, "TR_")) {
      g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                   "track %u: \"sid\" must be TR_ and up to %d of [A-Za-z0-9_]", i, SID_MAX);
      return FALSE;
    }
    SkTrackKind k;
    if (g_strcmp0 (kind, "video") == 0)
      k = SK_TRACK_KIND_VIDEO;
    else if (g_strcmp0 (kind, "audio") == 0)
      k = SK_TRACK_KIND_AUDIO;
    else {
      g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                   "track %u: \"kind\" must be \"video\" or \"audio\"", i);
      return FALSE;
    }
    for (guint j = 0; j < p->n_tracks; j++) {
      if (p->tracks[j].kind == k || strcmp (p->tracks[j].sid, sid) == 0) {
        g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                     "track %u repeats the kind or the sid of track %u", i, j);
        return FALSE;
      }
    }
    p->tracks[p->n_tracks].sid = g_strdup (sid);
    p->tracks[p->n_tracks].kind = k;
    p->n_tracks++;
  }
  return TRUE;
}

SkWhipParticipant *
sk_whip_participant_parse (const char *value, gsize len, GError **error)
{
  if (value == NULL || len == 0) {
    g_set_error_literal (error, SK_ERROR, SK_ERROR_INVALID,
                         "missing X-Streamkeeper-Participant header");
    return NULL;
  }
  if (len > SK_WHIP_PARTICIPANT_MAX_BYTES) {
    g_set_error (error, SK_ERROR, SK_ERROR_TOO_LARGE, "X-Streamkeeper-Participant exceeds %d bytes",
                 SK_WHIP_PARTICIPANT_MAX_BYTES);
    return NULL;
  }
  /* json-glib reads up to a NUL: one inside would hide the rest from validation. */
  if (memchr (value, '\0', len) != NULL || !g_utf8_validate_len (value, len, NULL)) {
    g_set_error_literal (error, SK_ERROR, SK_ERROR_INVALID,
                         "X-Streamkeeper-Participant is not UTF-8 text");
    return NULL;
  }

  g_autoptr (JsonParser) parser = json_parser_new_immutable ();
  g_autoptr (GError) local = NULL;
  if (!json_parser_load_from_data (parser, value, (gssize)len, &local)) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "X-Streamkeeper-Participant: %s",
                 local->message);
    return NULL;
  }
  JsonNode *root = json_parser_get_root (parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root)) {
    g_set_error_literal (error, SK_ERROR, SK_ERROR_INVALID,
                         "X-Streamkeeper-Participant must be a JSON object");
    return NULL;
  }
  JsonObject *o = json_node_get_object (root);
  const char *sid = get_string (o, "sid");
  const char *identity = get_string (o, "identity");
  const char *name = get_string (o, "name");
  const char *kind = get_string (o, "kind");
  const char *node = get_string (o, "ingress_node");

  const char *bad = NULL;
  if (sid == NULL || !sid_is_valid (sid, "PA_"))
    bad = "\"sid\" must be PA_ and up to 64 of [A-Za-z0-9_]";
  else if (identity == NULL || identity[0] == '\0' || strlen (identity) > TEXT_MAX)
    bad = "\"identity\" must be a string of 1-256 bytes";
  else if (name != NULL && strlen (name) > TEXT_MAX)
    bad = "\"name\" must be a string of at most 256 bytes";
  else if (json_object_has_member (o, "name") && name == NULL)
    bad = "\"name\" must be a string";
  else if (kind == NULL || !token_is_valid (kind, KIND_MAX, FALSE))
    bad = "\"kind\" must be 1-32 of [a-z0-9_]";
  else if (node == NULL || !token_is_valid (node, NODE_MAX, TRUE))
    bad = "\"ingress_node\" must be a node id (1-64 of [A-Za-z0-9._-])";
  if (bad != NULL) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "X-Streamkeeper-Participant: %s", bad);
    return NULL;
  }

  g_autoptr (SkWhipParticipant) p = g_new0 (SkWhipParticipant, 1);
  p->sid = g_strdup (sid);
  p->identity = g_strdup (identity);
  p->name = g_strdup (name != NULL ? name : "");
  p->kind = g_strdup (kind);
  p->ingress_node = g_strdup (node);
  g_autoptr (GError) track_error = NULL;
  if (!parse_tracks (o, p, &track_error)) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "X-Streamkeeper-Participant: %s",
                 track_error->message);
    return NULL;
  }
  return g_steal_pointer (&p);
}

void
sk_whip_participant_free (SkWhipParticipant *p)
{
  if (p == NULL)
    return;
  for (guint i = 0; i < p->n_tracks; i++)
    g_free (p->tracks[i].sid);
  g_free (p->sid);
  g_free (p->identity);
  g_free (p->name);
  g_free (p->kind);
  g_free (p->ingress_node);
  g_free (p);
}

const SkWhipParticipantTrack *
sk_whip_participant_get_track (const SkWhipParticipant *p, SkTrackKind kind)
{
  for (guint i = 0; i < p->n_tracks; i++)
    if (p->tracks[i].kind == kind)
      return &p->tracks[i];
  return NULL;
}
