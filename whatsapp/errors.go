package whatsapp

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
)

// GraphError is a refusal of the Graph API: its HTTP status and the error
// object of its body ({"error":{"message","type","code","error_subcode",
// "error_data":{"details"},"fbtrace_id"}}). Code is 0 when the body had no
// error object (a proxy's 502, say).
type GraphError struct {
	HTTPStatus int
	Code       int
	Subcode    int
	Type       string
	Message    string
	// Details is error_data.details, the most specific explanation.
	Details   string
	FBTraceID string
}

func (e *GraphError) Error() string {
	msg := e.Message
	if e.Details != "" {
		msg += " (" + e.Details + ")"
	}
	if e.Code == 0 {
		return fmt.Sprintf("whatsapp: graph api: HTTP %d: %s", e.HTTPStatus, msg)
	}
	return fmt.Sprintf("whatsapp: graph api: HTTP %d, code %d: %s", e.HTTPStatus, e.Code, msg)
}

// Throttling codes of the Cloud API: 4 (application request limit), 80007
// (WABA rate limit), 130429 (throughput of the number), 131048 (spam rate
// limit), 131056 (pair rate limit: too many messages to one recipient).
var throttlingCodes = []int{4, 80007, 130429, 131048, 131056}

// Throttled reports whether the Graph API asked to slow down: one of the
// throttling codes, or HTTP 429.
func (e *GraphError) Throttled() bool {
	return slices.Contains(throttlingCodes, e.Code) || e.HTTPStatus == http.StatusTooManyRequests
}

// Retryable reports whether the same request may succeed later: throttling
// (see Throttled) or a server error (HTTP 5xx, code 1 or 2 "unknown" /
// "temporary"). Everything else is permanent: the request, the recipient or
// the token is wrong, and sending it again fails again.
func (e *GraphError) Retryable() bool {
	return e.Throttled() || e.HTTPStatus >= 500 || e.Code == 1 || e.Code == 2
}

// graphError reads a refusal's body into a *GraphError.
func graphError(resp *http.Response) *GraphError {
	var body struct {
		Error struct {
			Message   string `json:"message"`
			Type      string `json:"type"`
			Code      int    `json:"code"`
			Subcode   int    `json:"error_subcode"`
			FBTraceID string `json:"fbtrace_id"`
			ErrorData struct {
				Details string `json:"details"`
			} `json:"error_data"`
		} `json:"error"`
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes))
	e := &GraphError{HTTPStatus: resp.StatusCode}
	if json.Unmarshal(raw, &body) == nil && body.Error.Code != 0 {
		b := body.Error
		e.Code, e.Subcode, e.Type, e.Message, e.Details, e.FBTraceID = b.Code, b.Subcode, clean(b.Type), clean(b.Message), clean(b.ErrorData.Details), clean(b.FBTraceID)
		return e
	}
	e.Message = http.StatusText(resp.StatusCode)
	return e
}
