/*
 * streamkeeper: cluster membership.
 *
 * Each node holds a lease in the state store (renewed every heartbeat, expiring after the
 * TTL) under a per-incarnation number, and keeps a view of the other nodes and of the room
 * placements, refreshed every heartbeat. A node whose lease is gone is retired by whichever
 * survivor notices first (its incarnation can then never renew), and the view reports its
 * rooms as orphaned; the room manager claims and rebuilds them. A node that finds its own
 * incarnation retired fences itself (the fenced callback: stop hosting rooms, close ingress
 * sessions) and rejoins as a new incarnation.
 *
 * A store that cannot be reached is not a reason to fence: streams keep flowing, the node
 * stops accepting new ones (not ready), and after the store is back (e.g. a Sentinel
 * failover) everyone gets a grace period to re-assert their leases before anyone is declared
 * dead. With the memory store this is a cluster of one.
 *
 * Besides the TTL, each node holds a connection to every other live node (sk-peers.h): when
 * one ends and nothing listens at that node's address any more (connection refused), its
 * incarnation is retired at once and the view refreshed, so a killed process is handled in
 * a few milliseconds. A stopped or unreachable node still connects or times out: the TTL
 * decides for it as before.
 */
#pragma once

#include <json-glib/json-glib.h>
#include <libsoup/soup.h>

#include "common/sk-config.h"
#include "failover/sk-store.h"

G_BEGIN_DECLS

typedef struct _SkCluster SkCluster;

typedef enum {
  SK_CLUSTER_JOINING,
  SK_CLUSTER_MEMBER,
  SK_CLUSTER_STORE_UNREACHABLE, /* no renewal answered within the TTL */
  SK_CLUSTER_FENCED,            /* our incarnation was retired; rejoining */
  SK_CLUSTER_LEFT,
} SkClusterState;

typedef enum {
  SK_NODE_ALIVE,
  SK_NODE_DEAD,    /* retired or superseded by a newer incarnation */
  SK_NODE_UNKNOWN, /* lease gone but not retired yet (or grace period) */
} SkNodeLiveness;

typedef struct {
  /* Our incarnation was retired: everything hosted or published here is someone else's now. */
  void (*fenced) (SkCluster *cluster, gpointer user_data);
  /* A new incarnation holds its lease (first join, or rejoin after fencing). */
  void (*joined) (SkCluster *cluster, guint64 incarnation, gpointer user_data);
  /* The view was refreshed: @placements (SkStorePlacement*) of every placed room. */
  void (*view) (SkCluster *cluster, GPtrArray *placements, gpointer user_data);
} SkClusterCallbacks;

/* @info_func returns the JSON object published with the lease (load, readiness); may be NULL. */
typedef JsonNode *(*SkClusterInfoFunc) (gpointer user_data);

SkCluster *sk_cluster_new (const SkConfig *config, SkStore *store);
void sk_cluster_free (SkCluster *cluster);
G_DEFINE_AUTOPTR_CLEANUP_FUNC (SkCluster, sk_cluster_free)

/* Several listeners (room manager, ingress registry) may subscribe. */
void sk_cluster_add_callbacks (SkCluster *cluster, const SkClusterCallbacks *callbacks,
                               gpointer user_data);
void sk_cluster_set_info_func (SkCluster *cluster, SkClusterInfoFunc func, gpointer user_data);

/* Serves GET /internal/v1/peer, which other nodes hold open to learn at once when this
 * node's process is gone (sk-peers.h). */
void sk_cluster_attach_http (SkCluster *cluster, SoupServer *server);

/* Reads the view now rather than at the next heartbeat (the view callbacks get it). */
void sk_cluster_refresh_view (SkCluster *cluster);

/* Joins and starts heartbeats. */
void sk_cluster_start (SkCluster *cluster);

/* Drops the lease and retires this incarnation at once (drain, clean exit), so survivors
 * take over without waiting for the TTL. */
void sk_cluster_leave_async (SkCluster *cluster, GAsyncReadyCallback callback, gpointer user_data);
gboolean sk_cluster_leave_finish (SkCluster *cluster, GAsyncResult *result, GError **error);

SkClusterState sk_cluster_get_state (SkCluster *cluster);
const char *sk_cluster_state_to_string (SkClusterState state);
const char *sk_cluster_get_node_id (SkCluster *cluster);
guint64 sk_cluster_get_incarnation (SkCluster *cluster); /* 0 until joined */

/* No-one may be declared dead right now (just joined, or the store just came back). */
gboolean sk_cluster_in_grace (SkCluster *cluster);

SkNodeLiveness sk_cluster_get_liveness (SkCluster *cluster, const char *node, guint64 incarnation);
/* The incarnation of @node holding a lease as of the last view; 0 if none. */
guint64 sk_cluster_get_live_incarnation (SkCluster *cluster, const char *node);
/* The advertise URL of a live node, from its lease; NULL if it has none. */
const char *sk_cluster_get_node_url (SkCluster *cluster, const char *node);
/* The JSON object a live node (not this one) published with its lease; NULL if none. */
JsonObject *sk_cluster_dup_node_info (SkCluster *cluster, const char *node);
/* Live nodes other than this one, by id (borrowed strings, valid until the next view). */
GPtrArray *sk_cluster_get_live_nodes (SkCluster *cluster);

/*
 * Resource ids (WHEP sessions, WHIP sessions) name the node that holds the resource, so a
 * request reaching any node behind the load balancer can be passed to it:
 * "<node id>~<128 random bits>".
 */
char *sk_cluster_new_resource_id (const char *node_id);

/* If @resource_id belongs to another live node, forwards @msg there (paused here, answered
 * with that node's reply, 502 if it cannot be reached) and returns TRUE; FALSE means "handle it
 * here" (ours, malformed, or not forwardable: the caller's 404 is the right answer). */
gboolean sk_cluster_forward (SkCluster *cluster, SoupServerMessage *msg, const char *resource_id);

G_END_DECLS
