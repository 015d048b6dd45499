// Package web is the engine's browser side, embedded in the binary and
// served as written (no build step): charla.js, the client library, with its
// type declarations; the agent panel at /; the admins' dashboard at
// /dashboard; and the files they load under /static/ (uPlot, vendored from
// npm, draws the dashboard's plots).
package web

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var files embed.FS

// Static is the embedded tree, for tests that read a file as it is served.
var Static, _ = fs.Sub(files, "static")

// Register adds the web routes to mux. Every answer is revalidated
// (no-cache), so that a page never runs a charla.js older than its engine.
func Register(mux *http.ServeMux) {
	static := http.FileServerFS(Static)
	file := func(name, contentType string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Cache-Control", "no-cache")
			if contentType != "" {
				w.Header().Set("Content-Type", contentType)
			}
			http.ServeFileFS(w, r, Static, name)
		}
	}
	mux.HandleFunc("GET /charla.js", file("charla.js", "text/javascript; charset=utf-8"))
	// .ts is MPEG transport stream to the mime table.
	mux.HandleFunc("GET /charla.d.ts", file("charla.d.ts", "application/typescript; charset=utf-8"))
	mux.HandleFunc("GET /{$}", file("index.html", ""))
	mux.HandleFunc("GET /dashboard", file("dashboard.html", ""))
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		static.ServeHTTP(w, r)
	})))
}
