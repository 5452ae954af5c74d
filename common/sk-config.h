/* streamkeeper: node configuration (GKeyFile file + command-line overrides). */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef enum {
  SK_DUPLICATE_KEY_REPLACE, /* a second publish with a live key replaces the old session */
  SK_DUPLICATE_KEY_REJECT,
} SkDuplicateKeyPolicy;

/* The transcode path's encoders (gst-launch fragments), also used by a pipeline made without a
 * config. */
#define SK_CONFIG_DEFAULT_VIDEO_ENCODER                                                            \
  "x264enc tune=zerolatency speed-preset=veryfast key-int-max=60 bframes=0"
/* Complexity 5 instead of 10: about 40 % less encoder CPU per stream for a quality loss that
 * is hard to hear at 96 kbit/s. 40 ms frames, not WebRTC's usual 20: a packet costs the same on
 * every viewer's send path whatever its size, and half as many audio packets took 0.7 % of a
 * core off a stream with one viewer, for 20 ms more audio latency. Receivers decode any Opus
 * frame length (RFC 7587). */
#define SK_CONFIG_DEFAULT_AUDIO_ENCODER "opusenc bitrate=96000 complexity=5 frame-size=40"

/*
 * Every field has an embedded default, so a node runs with no file and no option.
 * Key names in the file are "[group] key" as noted; command-line options override them.
 */
typedef struct {
  /* [node] */
  char *node_id;     /* id; default: hostname */
  char *bind;        /* bind; default "0.0.0.0" */
  guint rtmp_port;   /* rtmp_port; 1935 */
  guint http_port;   /* http_port; 8080 */
  char *public_host; /* public_host; host used in the URLs the API hands out; default: node's host
                        name */
  char *store;       /* store; "memory" | "redis://HOST:PORT" | "sentinel://HOST:PORT/MASTER" */
  char *api_token;   /* api_token; empty: generated at start, written to <state_dir>/api-token */
  char *state_dir;   /* state_dir */
  guint max_streams; /* max_streams; publishing sessions this node accepts; 0 = unlimited */

  /* [rtmp] limits, all checked before allocation */
  guint rtmp_max_connections;   /* max_connections; 200 */
  guint rtmp_max_chunk_size;    /* max_chunk_size; 65536 (peer's Set Chunk Size above → error) */
  guint rtmp_max_message_size;  /* max_message_size; 8 MiB */
  guint rtmp_max_chunk_streams; /* max_chunk_streams; 64 distinct csids per connection */
  guint rtmp_handshake_timeout_ms; /* handshake_timeout_ms; 5000 */
  guint rtmp_idle_timeout_ms;      /* idle_timeout_ms; 30000 before publish */

  /* [ingress] */
  guint publisher_timeout_ms; /* publisher_timeout_ms; 5000: no media → publisher_lost */
  SkDuplicateKeyPolicy on_duplicate_key; /* on_duplicate_key; "replace" | "reject" */

  /* [pipelines] gst-launch fragments */
  char *video_encoder; /* video_encoder; SK_CONFIG_DEFAULT_VIDEO_ENCODER */
  char *audio_encoder; /* audio_encoder; SK_CONFIG_DEFAULT_AUDIO_ENCODER */

  /* [rooms] */
  guint room_empty_timeout_ms; /* empty_timeout_ms; 10000 */
  guint sse_keepalive_ms;      /* sse_keepalive_ms; 15000 */
  guint max_subscribers;       /* max_subscribers; WHEP sessions per node; 200 */
  gboolean whep_require_token; /* whep_require_token; false */

  /* [webrtc] */
  char **ice_addresses; /* ice_addresses; local addresses libnice may use; empty = all */
  guint ice_port_min;   /* ice_port_min; 0 = any */
  guint ice_port_max;   /* ice_port_max */
  char **stun_servers;  /* stun_servers; "stun://host:port" */

  /* [webhooks] */
  char **webhook_urls;       /* urls */
  char *webhook_secret;      /* secret; HMAC-SHA256 key, defaults to the API token */
  guint webhook_max_retries; /* max_retries; 8 */
  guint webhook_queue_max;   /* queue_max; 10000 events per URL before the oldest are dropped */

  /* [cluster] (used with a shared store: redis:// or sentinel://) */
  guint cluster_heartbeat_ms;  /* heartbeat_ms; 200: lease renewal and failure-detection tick */
  guint cluster_lease_ttl_ms;  /* lease_ttl_ms; 1000: a node silent this long is dead */
  char *cluster_secret;        /* secret; authenticates node-to-node requests; unset = refused */
  char *cluster_advertise_url; /* advertise_url; this node's HTTP base URL for other nodes and
                                * redirects; default http://public_host:http_port */
  guint cluster_max_rooms;     /* max_rooms; rooms this node accepts to host; 0 = unlimited */
} SkConfig;

SkConfig *sk_config_new (void);
void sk_config_free (SkConfig *config);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkConfig, sk_config_free)

/* Loads @path over the current values. Unknown keys are warned about, bad values are errors. */
gboolean sk_config_load_file (SkConfig *config, const char *path, GError **error);

/*
 * Parses the command line of DESIGN.md: --config FILE is applied first, then every other
 * option overrides the file. Leaves unknown arguments as an error.
 */
gboolean sk_config_parse_args (SkConfig *config, int *argc, char ***argv, GError **error);

/* Fills what is still unset (node id, state dir, API token) and checks consistency. */
gboolean sk_config_finalize (SkConfig *config, GError **error);

G_END_DECLS
