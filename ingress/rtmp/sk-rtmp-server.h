/*
 * streamkeeper: the RTMP server front end. Accepts encoders and runs handshake, chunk streams
 * and AMF0 commands on the main context (non-blocking sockets, no thread per connection),
 * handing publishing sessions to the ingress registry.
 */
#pragma once

#include "common/sk-config.h"
#include "ingress/sk-ingress.h"

G_BEGIN_DECLS

typedef struct _SkRtmpServer SkRtmpServer;

/* Binds config->bind:config->rtmp_port and starts accepting. */
SkRtmpServer *sk_rtmp_server_new (const SkConfig *config, SkIngressRegistry *registry,
                                  GError **error);

/* Stops accepting and closes every connection (sessions end with server_shutdown). */
void sk_rtmp_server_free (SkRtmpServer *self);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkRtmpServer, sk_rtmp_server_free)

guint sk_rtmp_server_get_n_connections (SkRtmpServer *self);

/* The port actually bound (useful with rtmp_port = 0 in tests). */
guint sk_rtmp_server_get_port (SkRtmpServer *self);

G_END_DECLS
