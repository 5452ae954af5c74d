/*
 * streamkeeper: the ingress HTTP API.
 *
 *   POST   /v1/ingress            create → 201 + record
 *   GET    /v1/ingress[?room=R]   {"items": [record…]}, oldest first
 *   GET    /v1/ingress/{id}       record
 *   PATCH  /v1/ingress/{id}       change settings (next session) → 200 + record
 *   DELETE /v1/ingress/{id}       204; a live session ends with ingress_deleted
 *
 * Every request needs the API token. A request is validated whole before anything changes.
 */
#include <string.h>

#include "common/sk-common.h"
#include "common/sk-http.h"
#include "ingress/sk-ingress-private.h"

#define API_PREFIX "/v1/ingress"
#define API_MAX_BODY (64 * 1024)

/* The settable fields of a request; NULL / unset when absent. */
typedef struct {
  gboolean has_input_type;
  SkInputType input_type;
  const char *name;
  const char *room_name;
  const char *participant_identity;
  const char *participant_name;
  gboolean has_transcode;
  SkTranscodeMode transcode;
  gboolean has_enabled;
  gboolean enabled;
} IngressFields;

static gboolean field_error (GError **error, const char *format, ...) G_GNUC_PRINTF (2, 3);

static gboolean
field_error (GError **error, const char *format, ...)
{
  va_list ap;

  va_start (ap, format);
  g_autofree char *message = g_strdup_vprintf (format, ap);
  va_end (ap);
  g_set_error_literal (error, SK_ERROR, SK_ERROR_INVALID, message);
  return FALSE;
}

/* A string member of at most @max bytes of UTF-8 without control characters; absent or
 * null → *out = NULL. */
static gboolean
get_text (JsonObject *o, const char *name, gsize max, const char **out, GError **error)
{
  JsonNode *node = json_object_get_member (o, name);

  *out = NULL;
  if (node == NULL || JSON_NODE_HOLDS_NULL (node))
    return TRUE;
  if (!JSON_NODE_HOLDS_VALUE (node) || json_node_get_value_type (node) != G_TYPE_STRING)
    return field_error (error, "%s must be a string", name);

  const char *s = json_node_get_string (node);
  if (strlen (s) > max)
    return field_error (error, "%s is longer than %zu bytes", name, max);
  /* json-glib hands out valid UTF-8; control characters would end up in logs and headers. */
  for (const char *p = s; *p; p++)
    if ((guchar)*p < 0x20 || *p == 0x7f)
      return field_error (error, "%s contains control characters", name);
  *out = s;
  return TRUE;
}

static gboolean
room_name_is_valid (const char *s)
{
  gsize n = strlen (s);

  if (n == 0 || n > SK_INGRESS_MAX_ROOM)
    return FALSE;
  for (; *s; s++)
    if (!g_ascii_isalnum (*s) && *s != '_' && *s != '.' && *s != '-')
      return FALSE;
  return TRUE;
}

static gboolean
parse_fields (JsonObject *o, IngressFields *f, GError **error)
{
  const char *input_type, *transcode;

  memset (f, 0, sizeof *f);
  if (!get_text (o, "input_type", 16, &input_type, error)
      || !get_text (o, "name", SK_INGRESS_MAX_TEXT, &f->name, error)
      || !get_text (o, "room_name", SK_INGRESS_MAX_ROOM, &f->room_name, error)
      || !get_text (o, "participant_identity", SK_INGRESS_MAX_TEXT, &f->participant_identity, error)
      || !get_text (o, "participant_name", SK_INGRESS_MAX_TEXT, &f->participant_name, error)
      || !get_text (o, "transcode", 16, &transcode, error))
    return FALSE;

  if (input_type) {
    if (!sk_input_type_from_string (input_type, &f->input_type))
      return field_error (error, "input_type must be \"rtmp\" or \"whip\"");
    f->has_input_type = TRUE;
  }
  if (f->room_name && !room_name_is_valid (f->room_name))
    return field_error (error,
                        "room_name must be 1 to %d characters of A-Z, a-z, 0-9, '_', '.', '-'",
                        SK_INGRESS_MAX_ROOM);
  if (f->participant_identity && *f->participant_identity == '\0')
    return field_error (error, "participant_identity must not be empty");
  if (transcode) {
    if (!sk_transcode_mode_from_string (transcode, &f->transcode))
      return field_error (error, "transcode must be \"auto\", \"always\" or \"never\"");
    f->has_transcode = TRUE;
  }

  JsonNode *enabled = json_object_get_member (o, "enabled");
  if (enabled && !JSON_NODE_HOLDS_NULL (enabled)) {
    if (!JSON_NODE_HOLDS_VALUE (enabled) || json_node_get_value_type (enabled) != G_TYPE_BOOLEAN)
      return field_error (error, "enabled must be true or false");
    f->has_enabled = TRUE;
    f->enabled = json_node_get_boolean (enabled);
  }
  return TRUE;
}

static void
set_text (char **field, const char *value)
{
  if (value) {
    g_free (*field);
    *field = g_strdup (value);
  }
}

static void
apply_fields (SkIngressRecord *rec, const IngressFields *f)
{
  set_text (&rec->name, f->name);
  set_text (&rec->room_name, f->room_name);
  set_text (&rec->participant_identity, f->participant_identity);
  set_text (&rec->participant_name, f->participant_name);
  if (f->has_transcode)
    rec->transcode = f->transcode;
  if (f->has_enabled)
    rec->enabled = f->enabled;
}

static void
reply_record (SoupServerMessage *msg, guint status, SkIngressRecord *rec)
{
  g_autoptr (JsonNode) node = sk_ingress_record_to_json (rec, TRUE);
  sk_http_reply_json (msg, status, node);
}

static void
handle_create (SkIngressRegistry *self, SoupServerMessage *msg)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonObject) body = sk_http_read_json_object (msg, API_MAX_BODY, &error);
  IngressFields f;

  if (body == NULL || !parse_fields (body, &f, &error)) {
    sk_http_reply_gerror (msg, error);
    return;
  }
  if (!f.has_input_type) {
    sk_http_reply_error (msg, SOUP_STATUS_BAD_REQUEST, "invalid",
                         "input_type is required (\"rtmp\" or \"whip\")");
    return;
  }
  if (f.room_name == NULL) {
    sk_http_reply_error (msg, SOUP_STATUS_BAD_REQUEST, "invalid", "room_name is required");
    return;
  }

  SkIngressRecord *rec = sk_ingress_record_new (self, f.input_type);
  apply_fields (rec, &f);
  if (rec->name == NULL)
    rec->name = g_strdup ("");
  /* The identity must stay the same across reconnects (a new sid, same identity): default to
   * the name, else to the ingress id, never to something random per session. */
  if (rec->participant_identity == NULL)
    rec->participant_identity = g_strdup (*rec->name ? rec->name : rec->ingress_id);
  if (rec->participant_name == NULL)
    rec->participant_name = g_strdup (*rec->name ? rec->name : rec->participant_identity);
  sk_ingress_registry_insert (self, rec);

  g_message ("ingress %s created (%s, room %s)", rec->ingress_id,
             sk_input_type_to_string (rec->input_type), rec->room_name);
  g_autofree char *location = g_strdup_printf (API_PREFIX "/%s", rec->ingress_id);
  soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Location",
                                location);
  reply_record (msg, SOUP_STATUS_CREATED, rec);
}

static void
handle_list (SkIngressRegistry *self, SoupServerMessage *msg, GHashTable *query)
{
  const char *room = query ? g_hash_table_lookup (query, "room") : NULL;
  g_autoptr (GPtrArray) records = sk_ingress_registry_list (self, room);
  g_autoptr (JsonArray) items = json_array_sized_new (records->len);

  for (guint i = 0; i < records->len; i++)
    json_array_add_element (items, sk_ingress_record_to_json (records->pdata[i], TRUE));

  g_autoptr (JsonObject) o = json_object_new ();
  json_object_set_array_member (o, "items", g_steal_pointer (&items));
  g_autoptr (JsonNode) node = json_node_init_object (json_node_alloc (), o);
  sk_http_reply_json (msg, SOUP_STATUS_OK, node);
}

/* A field the client may repeat but not change (clients that send the whole record back). */
static gboolean
check_immutable (JsonObject *o, const char *name, const char *current, GError **error)
{
  JsonNode *node = json_object_get_member (o, name);

  if (node == NULL || JSON_NODE_HOLDS_NULL (node))
    return TRUE;
  if (JSON_NODE_HOLDS_VALUE (node) && json_node_get_value_type (node) == G_TYPE_STRING
      && g_strcmp0 (json_node_get_string (node), current) == 0)
    return TRUE;
  return field_error (error, "%s cannot be changed", name);
}

static void
handle_update (SkIngressRegistry *self, SoupServerMessage *msg, SkIngressRecord *rec)
{
  g_autoptr (GError) error = NULL;
  g_autoptr (JsonObject) body = sk_http_read_json_object (msg, API_MAX_BODY, &error);
  IngressFields f;

  if (body == NULL || !check_immutable (body, "ingress_id", rec->ingress_id, &error)
      || !check_immutable (body, "stream_key", rec->stream_key, &error)
      || !check_immutable (body, "url", rec->url, &error)
      || !check_immutable (body, "input_type", sk_input_type_to_string (rec->input_type), &error)
      || !parse_fields (body, &f, &error)) {
    sk_http_reply_gerror (msg, error);
    return;
  }
  apply_fields (rec, &f);
  sk_ingress_registry_persist (self, rec);
  reply_record (msg, SOUP_STATUS_OK, rec);
}

static void
reply_method_not_allowed (SoupServerMessage *msg, const char *allow)
{
  soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Allow", allow);
  sk_http_reply_error (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method_not_allowed",
                       "%s is not allowed here (allowed: %s)", soup_server_message_get_method (msg),
                       allow);
}

static void
handle_request (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                gpointer user_data)
{
  SkIngressRegistry *self = user_data;
  const char *method = soup_server_message_get_method (msg);

  if (!sk_http_require_token (msg, self->config->api_token))
    return;

  if (strcmp (path, API_PREFIX) == 0 || strcmp (path, API_PREFIX "/") == 0) {
    if (strcmp (method, "GET") == 0)
      handle_list (self, msg, query);
    else if (strcmp (method, "POST") == 0)
      handle_create (self, msg);
    else
      reply_method_not_allowed (msg, "GET, POST");
    return;
  }

  const char *id = g_str_has_prefix (path, API_PREFIX "/") ? path + strlen (API_PREFIX "/") : NULL;
  SkIngressRecord *rec = id && !strchr (id, '/') ? sk_ingress_registry_lookup (self, id) : NULL;
  if (rec == NULL) {
    sk_http_reply_error (msg, SOUP_STATUS_NOT_FOUND, "not_found", "no such ingress");
    return;
  }

  if (strcmp (method, "GET") == 0) {
    reply_record (msg, SOUP_STATUS_OK, rec);
  } else if (strcmp (method, "PATCH") == 0) {
    handle_update (self, msg, rec);
  } else if (strcmp (method, "DELETE") == 0) {
    g_message ("ingress %s deleted", rec->ingress_id);
    sk_ingress_registry_delete (self, rec);
    soup_server_message_set_status (msg, SOUP_STATUS_NO_CONTENT, NULL);
  } else {
    reply_method_not_allowed (msg, "GET, PATCH, DELETE");
  }
}

void
sk_ingress_registry_attach_http (SkIngressRegistry *self, SoupServer *server)
{
  soup_server_add_handler (server, API_PREFIX, handle_request, self, NULL);
}
