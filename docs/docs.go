// Package docs embeds the engine's documents that it serves itself: the
// OpenAPI 3 description of its REST surface (openapi.json), at
// GET /v1/openapi.json, and checked against every response by the REST
// contract tests.
package docs

import (
	_ "embed"
	"net/http"
)

// OpenAPI is docs/openapi.json, the OpenAPI 3.0 document of every REST
// endpoint.
//
//go:embed openapi.json
var OpenAPI []byte

// OpenAPIHandler serves OpenAPI as application/json.
func OpenAPIHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		_, _ = w.Write(OpenAPI)
	})
}
