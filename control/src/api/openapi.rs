//! The OpenAPI 3.1 description of control's HTTP interface, served at
//! `/api/v1/openapi.json`: every route, who may call it, and what it answers.

/// The OpenAPI 3.1 description of control's HTTP interface.
pub fn document() -> serde_json::Value {
    use serde_json::json;
    // Every error is an RFC 9457 problem.
    let text = |description: &str| json!({ "description": description, "content": { "application/problem+json": {} } });
    let object = |description: &str| json!({ "description": description, "content": { "application/json": { "schema": { "type": "object" } } } });
    let admin = json!([{ "bearer": [] }]);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Estuary control",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Sends each viewer to the best edge by location, cost and load, and explains why."
        },
        "components": { "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "description": "the admin_token of control's configuration" } } },
        "paths": {
            "/live/{path}": { "get": {
                "summary": "Redirect a viewer to an edge, with a fresh keycard",
                "parameters": [{ "name": "path", "in": "path", "required": true, "schema": { "type": "string" }, "description": "CHANNEL/… of the public URL layout" }],
                "responses": { "302": { "description": "to the chosen edge, for the path and the query parameters the layout defines; Location carries a fresh keycard=" }, "400": text("not the canonical spelling of a path of the public layout, or a bad layout parameter"), "404": text("nothing of the layout at this path, or a live channel no origin has"), "503": text("no site can take the viewer, and why") }
            }},
            "/vod/{path}": { "get": {
                "summary": "Redirect a viewer of an archive to an edge",
                "parameters": [{ "name": "path", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": { "302": { "description": "to the chosen edge" }, "400": text("not the canonical spelling of a path of the public layout"), "404": text("nothing of the layout at this path"), "503": text("no site can take the viewer") }
            }},
            "/api/v1/route": { "get": {
                "summary": "The decision for a viewer, with its reasons",
                "parameters": [
                    { "name": "ip", "in": "query", "required": true, "schema": { "type": "string" } },
                    { "name": "path", "in": "query", "required": false, "schema": { "type": "string", "default": "/live/demo/master.m3u8" } }
                ],
                "responses": { "200": object("group, candidate sites (distance, cost, load, why skipped), site, edge, reason"), "400": text("not an IP address, or not a path of the layout") }
            }},
            "/api/v1/reports": { "post": {
                "summary": "An edge's report (every second), signed with a report key",
                "parameters": [{ "name": "X-Estuary-Signature", "in": "header", "required": true, "schema": { "type": "string" }, "description": "t=UNIX_MS,kid=KEY_ID,sig=HEX: HMAC-SHA256 of \"estuary-report-v1\\n\" + t + \"\\n\" + body" }],
                "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "required": ["id", "site", "url", "clients", "egress_bps", "cache_hit_ratio", "cpu", "mood"] } } } },
                "responses": { "204": { "description": "taken" }, "400": text("does not parse, out of bounds or unknown site; nothing changed"), "401": text("unsigned, bad signature, unknown key, outside the clock window or replayed; nothing changed"), "403": text("contradicts the edge's pin, or the edge is not pinned and only pinned edges are taken"), "408": text("the body came too slowly"), "413": text("the body is larger than 4096 bytes") }
            }},
            "/api/v1/edges": { "get": { "summary": "Every edge heard from: last report, age, mood now", "responses": { "200": object("edges") } } },
            "/api/v1/edges/{id}": { "delete": {
                "summary": "Forget an edge until it reports again",
                "security": admin,
                "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "string" } }],
                "responses": { "204": { "description": "forgotten" }, "401": text("no or wrong admin token"), "403": text("no admin token configured"), "404": text("unknown edge") }
            }},
            "/api/v1/reload": { "post": {
                "summary": "Read the configuration file again, as SIGHUP does: sites, zones, GeoIP, keys, pinned edges, trusted proxies and policies change; a file that does not validate changes nothing",
                "security": admin,
                "responses": { "200": object("needs_restart: the changed keys that take effect only at the next start"), "401": text("no or wrong admin token"), "403": text("no admin token configured"), "409": text("control was not started from a file"), "422": text("the file does not validate; nothing changed") }
            }},
            "/api/v1/sites": { "get": { "summary": "Sites with their load, viewers, redirects in the last minute and edges", "responses": { "200": object("sites") } } },
            "/api/v1/channels": { "get": { "summary": "Channels viewers asked for (the first 1000 by name, the rest together), and the live channels the origins have", "security": admin, "responses": { "200": object("channels, other, live"), "401": text("no or wrong admin token"), "403": text("no admin token configured") } } },
            "/api/v1/decisions": { "get": { "summary": "Recent decisions per client group, with viewers' addresses and keycard ids", "security": admin, "responses": { "200": object("groups"), "401": text("no or wrong admin token"), "403": text("no admin token configured") } } },
            "/api/v1/events": { "get": { "summary": "Server-sent events: edge, decision, policy, forgotten", "security": admin, "responses": { "200": { "description": "an event stream", "content": { "text/event-stream": {} } }, "401": text("no or wrong admin token"), "403": text("no admin token configured") } } },
            "/api/v1/policy": {
                "get": { "summary": "The routing policies now", "responses": { "200": object("default and per-channel policies") } },
                "put": {
                    "summary": "Change the routing policies",
                    "security": admin,
                    "requestBody": { "required": true, "content": { "application/json": { "schema": { "type": "object", "properties": { "default": { "enum": ["closest", "least_cost", "least_loaded"] }, "channels": { "type": "object" } } } } } },
                    "responses": { "200": object("the policies now"), "400": text("not a policy"), "401": text("no or wrong admin token"), "403": text("no admin token configured"), "413": text("the body is larger than 64 KiB") }
                }
            },
            "/api/v1/openapi.json": { "get": { "summary": "This document", "responses": { "200": object("OpenAPI 3.1") } } },
            "/dashboard": { "get": { "summary": "The live dashboard", "responses": { "200": { "description": "an HTML page", "content": { "text/html": {} } } } } },
            "/healthz": { "get": { "summary": "Control's mood", "responses": { "200": object("role, mood, reason, edges, live_edges") } } }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_names_every_route() {
        let document = document();
        for path in [
            "/live/{path}",
            "/api/v1/route",
            "/api/v1/reports",
            "/api/v1/edges",
            "/api/v1/sites",
            "/api/v1/events",
            "/api/v1/policy",
            "/dashboard",
        ] {
            assert!(document["paths"][path].is_object(), "{path}");
        }
        assert_eq!(document["openapi"], "3.1.0");
        for path in ["/api/v1/decisions", "/api/v1/events", "/api/v1/channels"] {
            assert!(
                document["paths"][path]["get"]["security"].is_array(),
                "{path} shows viewers: it needs the token"
            );
        }
    }
}
