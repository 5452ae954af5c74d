/*
 * streamkeeper: GET /v1/rooms and /v1/rooms/{room}, from this node's rooms or, for a room
 * hosted elsewhere, from its host's snapshot in the store.
 */
#include "rooms/sk-rooms-private.h"

#include <string.h>

#include "common/sk-http.h"

/* ---- HTTP: /v1/rooms… -------------------------------------------------------------------- */

static gint
compare_room_names (gconstpointer a, gconstpointer b)
{
  return strcmp ((*(SkRoom *const *)a)->name, (*(SkRoom *const *)b)->name);
}

static void
rooms_http_list (SkRoomManager *self, SoupServerMessage *msg)
{
  g_autoptr (GPtrArray) rooms = g_ptr_array_new ();
  g_autoptr (JsonNode) root = NULL;
  JsonObject *o = json_object_new ();
  JsonArray *array = json_array_new ();
  GHashTableIter iter;
  SkRoom *room;

  g_hash_table_iter_init (&iter, self->rooms);
  while (g_hash_table_iter_next (&iter, NULL, (gpointer *)&room)) {
    /* Rooms this node hosts; one it only publishes into is listed by its host. */
    if (!room->finished && !room->remote && !room->lost)
      g_ptr_array_add (rooms, room);
  }
  g_ptr_array_sort (rooms, compare_room_names);
  for (guint i = 0; i < rooms->len; i++)
    json_array_add_element (array, sk_room_to_json (g_ptr_array_index (rooms, i), FALSE));
  json_object_set_array_member (o, "rooms", array);
  root = json_node_init_object (json_node_alloc (), o);
  json_object_unref (o);
  sk_http_reply_json (msg, SOUP_STATUS_OK, root);
}

/* WHEP for a room hosted on another live node: 307 there (DESIGN.md, data path 4). A room
 * placed nowhere is waited for here, as on a single node. */
static gboolean
manager_redirect_to_host (SkRoomManager *self, SoupServerMessage *msg, const char *room_name)
{
  SkRoom *room = g_hash_table_lookup (self->rooms, room_name);
  const char *host, *url;
  g_autofree char *location = NULL;
  GUri *uri;

  if (self->cluster == NULL || (room != NULL && !room->lost && !room->remote))
    return FALSE;
  host = room != NULL && room->remote ? room->host_node
                                      : g_hash_table_lookup (self->hosts, room_name);
  if (host == NULL || strcmp (host, self->config->node_id) == 0)
    return FALSE;
  url = sk_cluster_get_node_url (self->cluster, host);
  if (url == NULL || url[0] == '\0') {
    /* Its host holds no lease (it died, or left): the room is being rebuilt elsewhere. A
     * subscriber here would wait for a room this node may never get; the viewer retries. */
    sk_http_add_cors (msg, "POST, OPTIONS");
    sk_http_reply_error (msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "room_moving",
                         "room %s: its host %s is gone and the room is not rebuilt yet; retry",
                         room_name, host);
    soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Retry-After",
                                  "1");
    return TRUE;
  }
  uri = soup_server_message_get_uri (msg);
  location = g_strdup_printf ("%s%s%s%s", url, g_uri_get_path (uri),
                              g_uri_get_query (uri) != NULL ? "?" : "",
                              g_uri_get_query (uri) != NULL ? g_uri_get_query (uri) : "");
  soup_message_headers_replace (soup_server_message_get_response_headers (msg), "Location",
                                location);
  soup_server_message_set_status (msg, SOUP_STATUS_TEMPORARY_REDIRECT, NULL);
  return TRUE;
}

static void
on_room_snapshot_for_http (GObject *source, GAsyncResult *result, gpointer user_data)
{
  g_autoptr (SoupServerMessage) msg = user_data;
  g_autoptr (GError) error = NULL;
  SkRoomManager *self;
  g_autofree char *json = NULL;
  g_autoptr (JsonNode) node = NULL;

  if (sk_rooms_store_op_cancelled (result))
    return; /* the node is shutting down; the server drops the connection */
  self = g_object_get_data (G_OBJECT (msg), "sk-room-manager");
  json = sk_store_get_finish (self->store, result, &error);
  node = json != NULL ? json_from_string (json, NULL) : NULL;

  if (node != NULL && JSON_NODE_HOLDS_OBJECT (node)) {
    json_object_remove_member (json_node_get_object (node), "seq");
    sk_http_reply_json (msg, SOUP_STATUS_OK, node);
  } else if (error != NULL && !g_error_matches (error, SK_ERROR, SK_ERROR_NOT_FOUND)) {
    sk_http_reply_error (msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "unavailable", "%s", error->message);
  } else {
    sk_http_reply_error (msg, SOUP_STATUS_NOT_FOUND, "not_found", "room is not active");
  }
  soup_server_message_unpause (msg);
}

static void
rooms_http_handler (SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                    gpointer user_data)
{
  SkRoomManager *self = user_data;
  const char *method = soup_server_message_get_method (msg);
  const char *rest = path + strlen ("/v1/rooms");
  const char *slash;
  g_autofree char *room_name = NULL;
  SkRoom *room;

  if (*rest != '\0' && *rest != '/') {
    sk_http_reply_error (msg, SOUP_STATUS_NOT_FOUND, "not_found", "no such resource");
    return;
  }
  if (*rest == '/')
    rest++;

  if (*rest == '\0') {
    if (method != SOUP_METHOD_GET) {
      sk_http_reply_error (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method_not_allowed", "use GET");
      return;
    }
    if (sk_http_require_token (msg, self->config->api_token))
      rooms_http_list (self, msg);
    return;
  }

  slash = strchr (rest, '/');
  room_name = slash != NULL ? g_strndup (rest, slash - rest) : g_strdup (rest);
  rest = slash != NULL ? slash + 1 : "";
  if (!sk_room_name_is_valid (room_name)) {
    sk_http_reply_error (msg, SOUP_STATUS_BAD_REQUEST, "invalid",
                         "room name must be 1-%d characters of A-Z a-z 0-9 _ . -", ROOM_NAME_MAX);
    return;
  }

  if (strcmp (rest, "events") == 0) {
    if (method != SOUP_METHOD_GET) {
      sk_http_reply_error (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method_not_allowed", "use GET");
      return;
    }
    sk_events_http_handle (self->events, msg, room_name);
  } else if (strcmp (rest, "whep") == 0) {
    if (method != SOUP_METHOD_POST && method != SOUP_METHOD_OPTIONS) {
      sk_http_reply_error (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method_not_allowed",
                           "use POST (WHEP offer) or OPTIONS");
      return;
    }
    if (method == SOUP_METHOD_POST && manager_redirect_to_host (self, msg, room_name))
      return;
    sk_whep_server_handle_offer (self->whep, msg, room_name);
  } else if (*rest == '\0') {
    if (method != SOUP_METHOD_GET) {
      sk_http_reply_error (msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method_not_allowed", "use GET");
      return;
    }
    if (!sk_http_require_token (msg, self->config->api_token))
      return;
    room = g_hash_table_lookup (self->rooms, room_name);
    if (room == NULL || room->finished || room->lost || room->remote) {
      /* Hosted elsewhere in the cluster (or nowhere): the host's snapshot in the store. */
      soup_server_message_pause (msg);
      g_object_set_data (G_OBJECT (msg), "sk-room-manager", self);
      sk_store_get_async (self->store, SK_ROOMS_NS, room_name, self->cancellable,
                          on_room_snapshot_for_http, g_object_ref (msg));
      return;
    }
    {
      g_autoptr (JsonNode) root = sk_room_to_json (room, FALSE);

      sk_http_reply_json (msg, SOUP_STATUS_OK, root);
    }
  } else {
    sk_http_reply_error (msg, SOUP_STATUS_NOT_FOUND, "not_found", "no such resource");
  }
}

void
sk_room_manager_attach_http (SkRoomManager *self, SoupServer *server)
{
  soup_server_add_handler (server, "/v1/rooms", rooms_http_handler, self, NULL);
  sk_whep_server_attach_http (self->whep, server);
}
