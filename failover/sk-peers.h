/*
 * streamkeeper: fast detection of a dead node process (used by sk-cluster.c).
 *
 * Each node holds one long-lived request to every other live node:
 *
 *   GET /internal/v1/peer   Bearer <cluster secret>, X-Streamkeeper-Node: <our id>
 *   → 200, a chunked text/plain body that never ends: one line naming the serving node,
 *     then a keep-alive newline every second.
 *
 * When that connection ends (EOF, reset, read timeout), the peer's advertised HTTP address
 * is probed with a fresh TCP connect. Connection refused means no process listens there any
 * more: the dead func is called for the incarnation that was watched (the cluster retires it
 * in the store at once instead of waiting for its lease to expire). A probe that connects or
 * times out (a stopped or overloaded node, a partition) changes nothing: the watch is set up
 * again with backoff and the lease TTL remains the judge.
 *
 * Bounds: one watch per peer node (the store's view says which); as a server, one request
 * per calling node id (a new one replaces the old) and at most SK_PEERS_MAX_SERVED at once.
 * Main context only.
 */
#pragma once

#include <libsoup/soup.h>

#include "common/sk-config.h"

G_BEGIN_DECLS

#define SK_PEERS_PATH "/internal/v1/peer"
#define SK_PEERS_MAX_SERVED 64

typedef struct _SkPeers SkPeers;

/* No process listens at @node's advertised URL any more; @incarnation is the one watched. */
typedef void (*SkPeersDeadFunc) (const char *node, guint64 incarnation, const char *reason,
                                 gpointer user_data);

SkPeers *sk_peers_new (const SkConfig *config, SkPeersDeadFunc dead, gpointer user_data);
void sk_peers_free (SkPeers *self);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkPeers, sk_peers_free)

/* Serves SK_PEERS_PATH on @server. */
void sk_peers_attach_http (SkPeers *self, SoupServer *server);

/* Our incarnation, named in what we serve (0: none). */
void sk_peers_set_incarnation (SkPeers *self, guint64 incarnation);

/* The set of peers to watch, given whole after every view: begin, want each, end. A watch of
 * a node that is not wanted again (or now with another incarnation or URL) ends. */
void sk_peers_begin_sync (SkPeers *self);
void sk_peers_want (SkPeers *self, const char *node, guint64 incarnation, const char *url);
void sk_peers_end_sync (SkPeers *self);
/* Ends every watch (fenced, left). */
void sk_peers_clear (SkPeers *self);

/* Watches with an open connection, and requests served to other nodes. */
guint sk_peers_get_n_connected (SkPeers *self);
guint sk_peers_get_n_served (SkPeers *self);

G_END_DECLS
