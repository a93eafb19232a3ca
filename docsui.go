package main

import (
	"embed"
	"fmt"
	"net/http"
	"path"
)

// docsAssets are /docs's page and Swagger UI (web/swagger-ui/VERSION
// says which), in the binary: the reference works with no network.
//
//go:embed web/docs.html web/docs.js web/swagger-ui
var docsAssets embed.FS

// docsFiles are the files GET /docs/{file} serves.
var docsFiles = map[string]string{
	"docs.js":              "web/docs.js",
	"swagger-ui.css":       "web/swagger-ui/swagger-ui.css",
	"swagger-ui-bundle.js": "web/swagger-ui/swagger-ui-bundle.js",
}

// docsPolicy lets the page load errand's own scripts and styles only;
// Swagger UI sets style attributes and shows data: images.
const docsPolicy = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"

// handleDocs is GET /docs and GET /docs/{file}: the API reference, with
// "try it out" against this server.
func handleDocs() handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		name := "web/docs.html"
		if file := r.PathValue("file"); file != "" {
			var ok bool
			if name, ok = docsFiles[file]; !ok {
				return fmt.Errorf("docs file %s: %w", file, errNotFound)
			}
		}
		h := w.Header()
		h.Set("Content-Security-Policy", docsPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		switch path.Ext(name) {
		case ".html":
			h.Set("Content-Type", "text/html; charset=utf-8")
			h.Set("Cache-Control", "no-cache")
		case ".js":
			h.Set("Content-Type", "text/javascript; charset=utf-8")
			h.Set("Cache-Control", "public, max-age=3600")
		case ".css":
			h.Set("Content-Type", "text/css; charset=utf-8")
			h.Set("Cache-Control", "public, max-age=3600")
		}
		// Served from the embedded bytes, without a copy per request.
		http.ServeFileFS(w, r, docsAssets, name)
		return nil
	}
}
