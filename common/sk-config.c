/* streamkeeper: node configuration (GKeyFile file + command-line overrides).
 *
 * One table describes every key; the file, the dedicated options and --set all go through it,
 * so a value is parsed and checked the same way wherever it comes from.
 */
#include "common/sk-config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gio/gio.h>

#include "sk-build-config.h"
#include "common/sk-common.h"

typedef enum {
  KEY_STRING,   /* empty = unset (filled by finalize) */
  KEY_REQUIRED, /* a string that may not be empty */
  KEY_UINT,
  KEY_BOOL,
  KEY_STRV,
  KEY_DUPLICATE_POLICY,
} KeyType;

typedef struct {
  const char *group;
  const char *key;
  KeyType type;
  gsize offset;
  guint min, max; /* KEY_UINT */
} KeyDef;

#define F(field) G_STRUCT_OFFSET (SkConfig, field)
#define MS_MAX (24u * 3600 * 1000)

static const KeyDef keys[] = {
  { "node", "node_id", KEY_STRING, F (node_id) },
  { "node", "bind", KEY_REQUIRED, F (bind) },
  { "node", "rtmp_port", KEY_UINT, F (rtmp_port), 1, 65535 },
  { "node", "http_port", KEY_UINT, F (http_port), 1, 65535 },
  { "node", "public_host", KEY_STRING, F (public_host) },
  { "node", "store", KEY_REQUIRED, F (store) },
  { "node", "api_token", KEY_STRING, F (api_token) },
  { "node", "state_dir", KEY_STRING, F (state_dir) },
  { "node", "max_streams", KEY_UINT, F (max_streams), 0, 100000 },

  { "rtmp", "max_connections", KEY_UINT, F (rtmp_max_connections), 1, 100000 },
  /* RTMP allows chunk sizes up to 2^31-1; nobody needs more than 16 MiB. */
  { "rtmp", "max_chunk_size", KEY_UINT, F (rtmp_max_chunk_size), 128, 16 * 1024 * 1024 },
  /* The message length field is 24 bits. */
  { "rtmp", "max_message_size", KEY_UINT, F (rtmp_max_message_size), 1024, 0xffffff },
  { "rtmp", "max_chunk_streams", KEY_UINT, F (rtmp_max_chunk_streams), 2, 65599 },
  { "rtmp", "handshake_timeout_ms", KEY_UINT, F (rtmp_handshake_timeout_ms), 100, MS_MAX },
  { "rtmp", "idle_timeout_ms", KEY_UINT, F (rtmp_idle_timeout_ms), 100, MS_MAX },

  { "ingress", "publisher_timeout_ms", KEY_UINT, F (publisher_timeout_ms), 100, MS_MAX },
  { "ingress", "on_duplicate_key", KEY_DUPLICATE_POLICY, F (on_duplicate_key) },

  { "pipelines", "video_encoder", KEY_REQUIRED, F (video_encoder) },
  { "pipelines", "audio_encoder", KEY_REQUIRED, F (audio_encoder) },

  { "rooms", "empty_timeout_ms", KEY_UINT, F (room_empty_timeout_ms), 0, MS_MAX },
  { "rooms", "sse_keepalive_ms", KEY_UINT, F (sse_keepalive_ms), 100, MS_MAX },
  { "rooms", "max_subscribers", KEY_UINT, F (max_subscribers), 0, 100000 },
  { "rooms", "whep_require_token", KEY_BOOL, F (whep_require_token) },

  { "webrtc", "ice_addresses", KEY_STRV, F (ice_addresses) },
  { "webrtc", "ice_port_min", KEY_UINT, F (ice_port_min), 0, 65535 },
  { "webrtc", "ice_port_max", KEY_UINT, F (ice_port_max), 0, 65535 },
  { "webrtc", "stun_servers", KEY_STRV, F (stun_servers) },

  { "webhooks", "urls", KEY_STRV, F (webhook_urls) },
  { "webhooks", "secret", KEY_STRING, F (webhook_secret) },
  { "webhooks", "max_retries", KEY_UINT, F (webhook_max_retries), 0, 1000 },
  { "webhooks", "queue_max", KEY_UINT, F (webhook_queue_max), 1, 10000000 },

  { "cluster", "heartbeat_ms", KEY_UINT, F (cluster_heartbeat_ms), 20, 60000 },
  { "cluster", "lease_ttl_ms", KEY_UINT, F (cluster_lease_ttl_ms), 100, 600000 },
  { "cluster", "secret", KEY_STRING, F (cluster_secret) },
  { "cluster", "advertise_url", KEY_STRING, F (cluster_advertise_url) },
  { "cluster", "max_rooms", KEY_UINT, F (cluster_max_rooms), 0, 1000000 },
};

#undef F

SkConfig *
sk_config_new (void)
{
  SkConfig *c = g_new0 (SkConfig, 1);

  c->bind = g_strdup ("0.0.0.0");
  c->rtmp_port = 1935;
  c->http_port = 8080;
  c->store = g_strdup ("memory");
  c->max_streams = 0;

  c->rtmp_max_connections = 200;
  c->rtmp_max_chunk_size = 65536;
  c->rtmp_max_message_size = 8 * 1024 * 1024;
  c->rtmp_max_chunk_streams = 64;
  c->rtmp_handshake_timeout_ms = 5000;
  c->rtmp_idle_timeout_ms = 30000;

  c->publisher_timeout_ms = 5000;
  c->on_duplicate_key = SK_DUPLICATE_KEY_REPLACE;

  c->video_encoder = g_strdup (SK_CONFIG_DEFAULT_VIDEO_ENCODER);
  c->audio_encoder = g_strdup (SK_CONFIG_DEFAULT_AUDIO_ENCODER);

  c->room_empty_timeout_ms = 10000;
  c->sse_keepalive_ms = 15000;
  c->max_subscribers = 200;
  c->whep_require_token = FALSE;

  c->ice_addresses = g_new0 (char *, 1);
  c->stun_servers = g_new0 (char *, 1);

  c->webhook_urls = g_new0 (char *, 1);
  c->webhook_max_retries = 8;
  c->webhook_queue_max = 10000;

  c->cluster_heartbeat_ms = 200;
  c->cluster_lease_ttl_ms = 1000;
  return c;
}

void
sk_config_free (SkConfig *c)
{
  if (c == NULL)
    return;
  for (gsize i = 0; i < G_N_ELEMENTS (keys); i++) {
    gpointer field = G_STRUCT_MEMBER_P (c, keys[i].offset);

    if (keys[i].type == KEY_STRING || keys[i].type == KEY_REQUIRED)
      g_free (*(char **)field);
    else if (keys[i].type == KEY_STRV)
      g_strfreev (*(char ***)field);
  }
  g_free (c);
}

static const KeyDef *
find_key (const char *group, const char *key)
{
  for (gsize i = 0; i < G_N_ELEMENTS (keys); i++)
    if (strcmp (keys[i].group, group) == 0 && strcmp (keys[i].key, key) == 0)
      return &keys[i];
  return NULL;
}

/* Reads one key of @kf into @c; errors name the key and where it came from. */
static gboolean
apply_key (SkConfig *c, const KeyDef *def, GKeyFile *kf, const char *source, GError **error)
{
  gpointer field = G_STRUCT_MEMBER_P (c, def->offset);
  g_autoptr (GError) local = NULL;
  g_autofree char *raw = g_key_file_get_value (kf, def->group, def->key, NULL);
  g_autofree char *value = g_strstrip (g_strdup (raw ? raw : ""));

  switch (def->type) {
    case KEY_STRING:
    case KEY_REQUIRED: {
      char *s = g_key_file_get_string (kf, def->group, def->key, &local);
      if (s == NULL)
        break;
      g_strstrip (s);
      if (*s == '\0' && def->type == KEY_REQUIRED) {
        g_free (s);
        g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "%s: [%s] %s must not be empty", source,
                     def->group, def->key);
        return FALSE;
      }
      if (*s == '\0')
        g_clear_pointer (&s, g_free);
      g_free (*(char **)field);
      *(char **)field = s;
      return TRUE;
    }
    case KEY_UINT: {
      guint64 v = 0;
      if (!g_ascii_string_to_unsigned (value, 10, def->min, def->max, &v, &local))
        break;
      *(guint *)field = (guint)v;
      return TRUE;
    }
    case KEY_BOOL: {
      static const char *const yes[] = { "true", "yes", "on", "1", NULL };
      static const char *const no[] = { "false", "no", "off", "0", NULL };
      g_autofree char *lower = g_ascii_strdown (value, -1);

      if (g_strv_contains (yes, lower)) {
        *(gboolean *)field = TRUE;
        return TRUE;
      }
      if (g_strv_contains (no, lower)) {
        *(gboolean *)field = FALSE;
        return TRUE;
      }
      local = g_error_new (SK_ERROR, SK_ERROR_INVALID, "“%s” is not a boolean (true/false)", value);
      break;
    }
    case KEY_STRV: {
      g_auto (GStrv) list = g_key_file_get_string_list (kf, def->group, def->key, NULL, &local);
      if (list == NULL && local != NULL)
        break;
      g_autoptr (GStrvBuilder) b = g_strv_builder_new ();
      for (char **p = list; p && *p; p++) {
        g_strstrip (*p);
        if (**p)
          g_strv_builder_add (b, *p);
      }
      g_strfreev (*(char ***)field);
      *(char ***)field = g_strv_builder_end (b);
      return TRUE;
    }
    case KEY_DUPLICATE_POLICY:
      if (strcmp (value, "replace") == 0) {
        *(SkDuplicateKeyPolicy *)field = SK_DUPLICATE_KEY_REPLACE;
        return TRUE;
      }
      if (strcmp (value, "reject") == 0) {
        *(SkDuplicateKeyPolicy *)field = SK_DUPLICATE_KEY_REJECT;
        return TRUE;
      }
      local = g_error_new (SK_ERROR, SK_ERROR_INVALID, "“%s” is not one of replace, reject", value);
      break;
  }

  g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "%s: [%s] %s: %s", source, def->group, def->key,
               local ? local->message : "invalid value");
  return FALSE;
}

/* Applies every key of @kf; unknown keys are warned about (files) or errors (command line). */
static gboolean
apply_keyfile (SkConfig *c, GKeyFile *kf, const char *source, gboolean strict, GError **error)
{
  g_auto (GStrv) groups = g_key_file_get_groups (kf, NULL);

  for (char **g = groups; *g; g++) {
    g_auto (GStrv) names = g_key_file_get_keys (kf, *g, NULL, NULL);

    for (char **k = names; names && *k; k++) {
      const KeyDef *def = find_key (*g, *k);

      if (def == NULL) {
        if (strict) {
          g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "%s: unknown key [%s] %s", source, *g,
                       *k);
          return FALSE;
        }
        g_warning ("%s: ignoring unknown key [%s] %s", source, *g, *k);
        continue;
      }
      if (!apply_key (c, def, kf, source, error))
        return FALSE;
    }
  }
  return TRUE;
}

gboolean
sk_config_load_file (SkConfig *config, const char *path, GError **error)
{
  g_autoptr (GKeyFile) kf = g_key_file_new ();
  g_autoptr (GError) local = NULL;

  if (!g_key_file_load_from_file (kf, path, G_KEY_FILE_NONE, &local)) {
    gboolean missing = g_error_matches (local, G_FILE_ERROR, G_FILE_ERROR_NOENT);
    g_set_error (error, SK_ERROR, missing ? SK_ERROR_NOT_FOUND : SK_ERROR_INVALID, "%s: %s", path,
                 local->message);
    return FALSE;
  }
  return apply_keyfile (config, kf, path, FALSE, error);
}

/* A dedicated option and the key it overrides. */
typedef struct {
  const char *long_name;
  const char *group, *key;
  gboolean repeatable;
  const char *arg_description, *description;
} OptionKey;

static const OptionKey option_keys[] = {
  { "node-id", "node", "node_id", FALSE, "ID", "Node id (default: host name)" },
  { "bind", "node", "bind", FALSE, "ADDR", "Address to listen on (default 0.0.0.0)" },
  { "rtmp-port", "node", "rtmp_port", FALSE, "N", "RTMP port (default 1935)" },
  { "http-port", "node", "http_port", FALSE, "N", "HTTP port: API, WHIP, WHEP, SSE (8080)" },
  { "public-host", "node", "public_host", FALSE, "HOST", "Host name used in handed-out URLs" },
  { "ice-address", "webrtc", "ice_addresses", TRUE, "ADDR", "Local address for ICE (repeatable)" },
  { "store", "node", "store", FALSE, "URI",
    "memory | redis://HOST:PORT | sentinel://HOST:PORT/MASTER" },
  { "api-token", "node", "api_token", FALSE, "TOKEN", "API bearer token" },
  { "state-dir", "node", "state_dir", FALSE, "DIR", "Directory for the API token and state" },
  { "publisher-timeout-ms", "ingress", "publisher_timeout_ms", FALSE, "N",
    "No media for this long ends a publisher (publisher_lost)" },
  { "room-empty-timeout-ms", "rooms", "empty_timeout_ms", FALSE, "N",
    "An empty room finishes after this long" },
  { "webhook-url", "webhooks", "urls", TRUE, "URL", "Webhook receiver (repeatable)" },
};

gboolean
sk_config_parse_args (SkConfig *config, int *argc, char ***argv, GError **error)
{
  g_autofree char *config_path = NULL;
  g_auto (GStrv) sets = NULL;
  gboolean version = FALSE;
  /* One slot per dedicated option: a char* or a char** for repeatable ones. */
  gpointer values[G_N_ELEMENTS (option_keys)] = { 0 };
  GOptionEntry entries[G_N_ELEMENTS (option_keys) + 4];
  gsize n = 0;

  entries[n++] = (GOptionEntry){
    "config", 'c', 0, G_OPTION_ARG_FILENAME, &config_path, "Configuration file (applied first)",
    "FILE"
  };
  for (gsize i = 0; i < G_N_ELEMENTS (option_keys); i++)
    entries[n++] = (GOptionEntry){ option_keys[i].long_name,
                                   0,
                                   0,
                                   option_keys[i].repeatable ? G_OPTION_ARG_STRING_ARRAY
                                                             : G_OPTION_ARG_STRING,
                                   &values[i],
                                   option_keys[i].description,
                                   option_keys[i].arg_description };
  entries[n++] = (GOptionEntry){ "set",
                                 0,
                                 0,
                                 G_OPTION_ARG_STRING_ARRAY,
                                 &sets,
                                 "Set any config key (repeatable)",
                                 "GROUP.KEY=VALUE" };
  entries[n++] = (GOptionEntry){
    "version", 'V', 0, G_OPTION_ARG_NONE, &version, "Print the version and exit", NULL
  };
  entries[n++] = (GOptionEntry){ NULL };

  g_autoptr (GOptionContext) ctx = g_option_context_new (NULL);
  g_option_context_set_summary (ctx, "streamkeeper: RTMP/WHIP ingress into rooms, kept alive "
                                     "across node failures.");
  g_option_context_add_main_entries (ctx, entries, NULL);

  gboolean ok = g_option_context_parse (ctx, argc, argv, error);
  /* Build the overrides even on failure so that the values are freed in one place. */
  g_autoptr (GKeyFile) overrides = g_key_file_new ();

  for (gsize i = 0; i < G_N_ELEMENTS (option_keys); i++) {
    if (values[i] == NULL)
      continue;
    if (option_keys[i].repeatable) {
      char **list = values[i];
      g_key_file_set_string_list (overrides, option_keys[i].group, option_keys[i].key,
                                  (const char *const *)list, g_strv_length (list));
      g_strfreev (list);
    } else {
      g_key_file_set_string (overrides, option_keys[i].group, option_keys[i].key, values[i]);
      g_free (values[i]);
    }
  }
  if (!ok)
    return FALSE;

  if (version) {
    printf ("streamkeeper %s\n", SK_VERSION);
    exit (0);
  }
  if (*argc > 1) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "unexpected argument “%s”", (*argv)[1]);
    return FALSE;
  }

  /* --set first, so a dedicated option given alongside wins. */
  g_autoptr (GKeyFile) set_kf = g_key_file_new ();
  for (char **s = sets; s && *s; s++) {
    const char *eq = strchr (*s, '=');
    const char *dot = eq ? memchr (*s, '.', (gsize)(eq - *s)) : NULL;

    if (dot == NULL || dot == *s || dot + 1 == eq || strchr (eq, '\n')) {
      g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "--set “%s”: expected GROUP.KEY=VALUE", *s);
      return FALSE;
    }
    g_autofree char *group = g_strndup (*s, (gsize)(dot - *s));
    g_autofree char *key = g_strndup (dot + 1, (gsize)(eq - dot - 1));
    /* Raw value: same syntax as the file (lists separated by ';'). */
    g_key_file_set_value (set_kf, group, key, eq + 1);
  }

  if (config_path && !sk_config_load_file (config, config_path, error))
    return FALSE;
  if (!apply_keyfile (config, set_kf, "--set", TRUE, error))
    return FALSE;
  return apply_keyfile (config, overrides, "command line", TRUE, error);
}

static gboolean
is_id_char (char c)
{
  return g_ascii_isalnum (c) || c == '-' || c == '_' || c == '.';
}

/* A bearer token travels in a header: printable ASCII, no spaces. */
static gboolean
token_is_valid (const char *t)
{
  if (*t == '\0')
    return FALSE;
  for (; *t; t++)
    if (*t <= ' ' || *t >= 0x7f)
      return FALSE;
  return TRUE;
}

static char *
default_state_dir (void)
{
  /* systemd's StateDirectory= tells us where it is (also with DynamicUser=). */
  const char *sd = g_getenv ("STATE_DIRECTORY");
  if (sd && *sd) {
    const char *colon = strchr (sd, ':');
    return colon ? g_strndup (sd, (gsize)(colon - sd)) : g_strdup (sd);
  }
  if (geteuid () == 0 && access ("/var/lib/streamkeeper", W_OK) == 0)
    return g_strdup ("/var/lib/streamkeeper");
  return g_build_filename (g_get_user_state_dir (), "streamkeeper", NULL);
}

/* The API token: configured, else <state_dir>/api-token, else a new one written there. */
static gboolean
resolve_api_token (SkConfig *c, GError **error)
{
  if (c->api_token) {
    if (!token_is_valid (c->api_token)) {
      g_set_error_literal (error, SK_ERROR, SK_ERROR_INVALID,
                           "[node] api_token: printable ASCII without spaces expected");
      return FALSE;
    }
    if (strlen (c->api_token) < 16)
      g_warning ("the configured API token is short (%zu characters): use 16 or more",
                 strlen (c->api_token));
    g_message ("API token: from the configuration");
    return TRUE;
  }

  g_autofree char *path = g_build_filename (c->state_dir, "api-token", NULL);
  g_autofree char *contents = NULL;
  gsize len = 0;
  g_autoptr (GError) local = NULL;

  if (g_file_get_contents (path, &contents, &len, &local)) {
    g_strstrip (contents);
    if (len > 4096 || !token_is_valid (contents)) {
      g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                   "%s: not a valid token (printable ASCII without spaces)", path);
      return FALSE;
    }
    c->api_token = g_steal_pointer (&contents);
    g_message ("API token: read from %s", path);
    return TRUE;
  }
  if (!g_error_matches (local, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "%s", local->message);
    return FALSE;
  }

  g_autofree char *token = sk_secret_new (192);
  g_autofree char *line = g_strconcat (token, "\n", NULL);
  g_clear_error (&local);
  if (!g_file_set_contents_full (path, line, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600, &local)) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "cannot write the API token: %s",
                 local->message);
    return FALSE;
  }
  /* Shown once, on the run that creates it, so a first-time operator can use the API at once;
   * the logs only ever name the file. */
  fprintf (stderr, "streamkeeper: generated a new API token (kept in %s):\n  %s\n", path, token);
  g_message ("API token: generated and written to %s", path);
  c->api_token = g_steal_pointer (&token);
  return TRUE;
}

gboolean
sk_config_finalize (SkConfig *c, GError **error)
{
  if (c->node_id == NULL)
    c->node_id = g_strdup (g_get_host_name ());
  if (strlen (c->node_id) > 64) {
    g_set_error_literal (error, SK_ERROR, SK_ERROR_INVALID,
                         "[node] node_id: at most 64 characters");
    return FALSE;
  }
  for (const char *p = c->node_id; *p; p++) {
    if (!is_id_char (*p)) {
      g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                   "[node] node_id “%s”: only letters, digits, '-', '_' and '.' are allowed",
                   c->node_id);
      return FALSE;
    }
  }

  if (!g_hostname_is_ip_address (c->bind)) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "[node] bind “%s”: not an IP address", c->bind);
    return FALSE;
  }
  if (c->rtmp_port == c->http_port) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "rtmp_port and http_port are both %u",
                 c->rtmp_port);
    return FALSE;
  }
  if (c->public_host == NULL) {
    /* A node bound to one address is reached there; a wildcard bind by its host name. */
    gboolean wildcard = strcmp (c->bind, "0.0.0.0") == 0 || strcmp (c->bind, "::") == 0;
    c->public_host = g_strdup (wildcard ? g_get_host_name () : c->bind);
  }

  if (strcmp (c->store, "memory") != 0 && !g_str_has_prefix (c->store, "redis://")
      && !g_str_has_prefix (c->store, "sentinel://")) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                 "[node] store “%s”: expected memory, redis://HOST:PORT or "
                 "sentinel://HOST:PORT/MASTER",
                 c->store);
    return FALSE;
  }

  if ((c->ice_port_min == 0) != (c->ice_port_max == 0) || c->ice_port_min > c->ice_port_max) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                 "[webrtc] ice_port_min/ice_port_max: %u..%u is not a port range (0/0 = any)",
                 c->ice_port_min, c->ice_port_max);
    return FALSE;
  }
  for (char **a = c->ice_addresses; *a; a++) {
    if (!g_hostname_is_ip_address (*a)) {
      g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                   "[webrtc] ice_addresses: “%s” is not an IP address", *a);
      return FALSE;
    }
  }
  for (char **u = c->webhook_urls; *u; u++) {
    g_autoptr (GUri) uri = g_uri_parse (*u, G_URI_FLAGS_NONE, NULL);
    const char *scheme = uri ? g_uri_get_scheme (uri) : NULL;

    if (scheme == NULL || (strcmp (scheme, "http") != 0 && strcmp (scheme, "https") != 0)
        || g_uri_get_host (uri) == NULL) {
      g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "[webhooks] urls: “%s” is not an http(s) URL",
                   *u);
      return FALSE;
    }
  }

  if (c->cluster_heartbeat_ms * 2 > c->cluster_lease_ttl_ms) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                 "[cluster] lease_ttl_ms (%u) must be at least twice heartbeat_ms (%u)",
                 c->cluster_lease_ttl_ms, c->cluster_heartbeat_ms);
    return FALSE;
  }
  if (c->cluster_secret != NULL && !token_is_valid (c->cluster_secret)) {
    g_set_error_literal (error, SK_ERROR, SK_ERROR_INVALID,
                         "[cluster] secret: printable ASCII without spaces");
    return FALSE;
  }
  if (c->cluster_advertise_url == NULL) {
    gboolean v6 = strchr (c->public_host, ':') != NULL;
    c->cluster_advertise_url = g_strdup_printf ("http://%s%s%s:%u", v6 ? "[" : "", c->public_host,
                                                v6 ? "]" : "", c->http_port);
  } else {
    g_autoptr (GUri) uri = g_uri_parse (c->cluster_advertise_url, G_URI_FLAGS_NONE, NULL);
    const char *scheme = uri ? g_uri_get_scheme (uri) : NULL;

    if (scheme == NULL || (strcmp (scheme, "http") != 0 && strcmp (scheme, "https") != 0)
        || g_uri_get_host (uri) == NULL) {
      g_set_error (error, SK_ERROR, SK_ERROR_INVALID,
                   "[cluster] advertise_url: “%s” is not an http(s) URL", c->cluster_advertise_url);
      return FALSE;
    }
  }

  if (c->state_dir == NULL)
    c->state_dir = default_state_dir ();
  if (g_mkdir_with_parents (c->state_dir, 0700) != 0) {
    g_set_error (error, SK_ERROR, SK_ERROR_INVALID, "state directory %s: %s", c->state_dir,
                 g_strerror (errno));
    return FALSE;
  }
  if (!resolve_api_token (c, error))
    return FALSE;
  if (c->webhook_secret == NULL)
    c->webhook_secret = g_strdup (c->api_token);
  return TRUE;
}
