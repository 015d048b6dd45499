package transport

import (
	"net/http"

	"charla"
)

// problem is the REST error body: {"error":{"code","message"}}, with the
// protocol's error codes. (The WebSocket upgrade's refusals keep their flat
// {"code","message"}, which protocol v1 documents.)
type problem struct {
	Error problemDetail `json:"error"`
}

type problemDetail struct {
	Code    charla.Code `json:"code"`
	Message string      `json:"message"`
}

// writeProblem answers a REST request with status and e as the error body.
func writeProblem(w http.ResponseWriter, status int, e *charla.Error) {
	writeJSON(w, status, problem{problemDetail{Code: e.Code, Message: e.Message}})
}
