/* Orthanc peers shared by the cluster, stored in PostgreSQL (the `peers`
 * table): Orthanc's /peers routes, the peer's /system, and sending resources
 * as an OrthancPeerStore job. */
#ifndef REST_PEERS_H
#define REST_PEERS_H

#include "rest_http.h"

void rest_list_peers(rest_request *req);
void rest_get_peer(rest_request *req);
void rest_get_peer_configuration(rest_request *req);
void rest_put_peer(rest_request *req);
void rest_delete_peer(rest_request *req);
void rest_peer_system(rest_request *req);
void rest_peer_store(rest_request *req);
void rest_peer_store_straight(rest_request *req);

#endif
