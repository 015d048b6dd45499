package transport

import (
	"net/http"

	"charla"
)

// WithMetrics serves h (the engine's Prometheus registry) at GET /metrics
// on the main listener, to admins only: load figures help an attacker. A
// scraper without an admin token reads it on --metrics-addr instead.
func WithMetrics(h http.Handler) ServerOption { return func(s *Server) { s.metrics = h } }

// routeOps mounts the operators' endpoints.
func (s *Server) routeOps(mux *http.ServeMux) {
	if s.metrics != nil {
		mux.Handle("GET /metrics", s.adminOnly(s.metrics))
	}
}

// adminOnly lets admins through (admin token, or role=admin in dev mode):
// 401 without valid credentials, 403 for any other role.
func (s *Server) adminOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := s.cfg.Auth.Authenticate(r)
		switch {
		case err != nil:
			writeProblem(w, charla.AsError(err))
		case id.User.Role != charla.RoleAdmin:
			writeProblem(w, charla.Errorf(charla.CodeForbidden, "admins only"))
		default:
			h.ServeHTTP(w, r)
		}
	})
}
