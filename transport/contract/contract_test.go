package contract

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/png"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"charla"
	"charla/docs"
	"charla/store"
	"charla/store/postgres"
	"charla/store/postgres/pgtest"
	"charla/transport"
	"charla/transport/transporttest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, transporttest.LeakOptions()...)) }

// router loads docs/openapi.json, checks that it is a valid OpenAPI 3
// document, and routes requests to its operations.
func router(t *testing.T) routers.Router {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(docs.OpenAPI)
	if err != nil {
		t.Fatalf("load openapi.json: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.json is not valid OpenAPI 3: %v", err)
	}
	doc.Servers = nil // match any host: the engine listens on a random port
	r, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// checker sends requests and validates each response (status, headers,
// body) against the document; a status the document does not list fails.
type checker struct {
	t      *testing.T
	router routers.Router
	base   string
	// lastHeader is the header of the last answer.
	lastHeader http.Header
}

func (c *checker) do(method, path, token, ctype string, body []byte) (int, []byte) {
	c.t.Helper()
	req, _ := http.NewRequest(method, c.base+path, bytes.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		c.t.Fatalf("%s %s: not in openapi.json: %v", method, path, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	c.lastHeader = resp.Header
	got, _ := io.ReadAll(resp.Body)
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Options:                &openapi3filter.Options{IncludeResponseStatus: true},
	}
	in.SetBodyBytes(got)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		c.t.Errorf("%s %s → %d %s\ndoes not match openapi.json: %v", method, path, resp.StatusCode, got, err)
	}
	return resp.StatusCode, got
}

func (c *checker) expect(status int, method, path, token, ctype string, body []byte) []byte {
	c.t.Helper()
	got, b := c.do(method, path, token, ctype, body)
	if got != status {
		c.t.Fatalf("%s %s = %d %s, want %d", method, path, got, b, status)
	}
	return b
}

func jsonBody(v any) []byte { b, _ := json.Marshal(v); return b }

// frameType is the type of a server frame.
func frameType(frame []byte) string {
	var f struct{ Type string }
	json.Unmarshal(frame, &f)
	return f.Type
}

// TestContract runs every documented REST endpoint of login, media,
// health, long-polling and history through its answers on both stores.
func TestContract(t *testing.T) {
	for _, kind := range []string{"pebble", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			var st transporttest.LoginStore
			if kind == "postgres" {
				o := postgres.DefaultOptions()
				o.URL, o.AutoMigrate, o.MaxConns, o.MinConns = pgtest.SchemaURL(t), true, 4, 0
				ps, err := postgres.Open(t.Context(), o, transporttestLog(t))
				if err != nil {
					t.Fatal(err)
				}
				st = ps
			}
			e, svc := transporttest.StartLogin(t, st)
			if _, err := svc.AddAgent(t.Context(), "ana@example.com", "Ana", charla.RoleAdmin, "correct horse battery"); err != nil {
				t.Fatal(err)
			}
			c := &checker{t: t, router: router(t), base: "http://" + e.Addr}
			const js = "application/json"

			c.expect(200, "GET", "/healthz", "", "", nil)
			c.expect(200, "GET", "/readyz", "", "", nil)
			c.expect(200, "GET", "/v1/openapi.json", "", "", nil)

			c.expect(401, "POST", "/v1/auth/login", "", js, jsonBody(map[string]string{"email": "ana@example.com", "password": "wrong"}))
			c.expect(400, "POST", "/v1/auth/login", "", js, []byte(`{"email":`))
			c.expect(415, "POST", "/v1/auth/login", "", "text/plain", []byte(`{}`))
			var tr transport.TokenResponse
			json.Unmarshal(c.expect(200, "POST", "/v1/auth/login", "", js, jsonBody(map[string]string{"email": "ana@example.com", "password": "correct horse battery"})), &tr)
			c.expect(200, "GET", "/readyz", tr.AccessToken, "", nil) // an admin sees the details
			var next transport.TokenResponse
			json.Unmarshal(c.expect(200, "POST", "/v1/auth/refresh", "", js, jsonBody(map[string]string{"refresh_token": tr.RefreshToken})), &next)
			c.expect(401, "POST", "/v1/auth/refresh", "", js, jsonBody(map[string]string{"refresh_token": tr.RefreshToken}))
			c.expect(204, "POST", "/v1/auth/logout", "", js, jsonBody(map[string]string{"refresh_token": next.RefreshToken}))

			img := image.NewGray(image.Rect(0, 0, 2, 2))
			var pngb bytes.Buffer
			png.Encode(&pngb, img)
			cust, _ := transport.MintToken(transporttest.Secret, "carol", charla.RoleCustomer, time.Hour)
			other, _ := transport.MintToken(transporttest.Secret, "dave", charla.RoleCustomer, time.Hour)
			var m struct{ ID string }
			json.Unmarshal(c.expect(201, "POST", "/v1/media?conv=carol", cust, "image/png", pngb.Bytes()), &m)
			c.expect(415, "POST", "/v1/media?conv=carol", cust, "image/png", []byte("plain text, not a picture"))
			c.expect(403, "POST", "/v1/media?conv=dave", cust, "image/png", pngb.Bytes())
			c.expect(401, "POST", "/v1/media?conv=carol", "", "image/png", pngb.Bytes())
			c.expect(200, "GET", "/v1/media/"+m.ID, cust, "", nil)
			c.expect(200, "GET", "/v1/media/"+m.ID, tr.AccessToken, "", nil)
			c.expect(403, "GET", "/v1/media/"+m.ID, other, "", nil)
			c.expect(404, "GET", "/v1/media/ffffffffffffffffffffffffffffffff", cust, "", nil)
			c.expect(401, "GET", "/v1/media/"+m.ID, "", "", nil)

			// Long-polling (poll.go): a new session's first answer is its
			// welcome, even with wait_ms 0.
			var pr transport.PollResponse
			json.Unmarshal(c.expect(200, "POST", "/v1/poll", cust, js, jsonBody(map[string]any{"cursors": map[string]int{"carol": 0}, "wait_ms": 0})), &pr)
			if len(pr.Frames) == 0 || frameType(pr.Frames[0]) != "welcome" {
				t.Fatalf("first poll of a session = %s, want a welcome first", pr.Frames)
			}
			c.expect(400, "POST", "/v1/poll", cust, js, jsonBody(map[string]any{"cursors": map[string]int{}, "wait_ms": -1}))
			c.expect(401, "POST", "/v1/poll", "", js, jsonBody(map[string]any{"cursors": map[string]int{}, "wait_ms": 0}))

			const msgID = "0b7e8c6a-3f4e-4f57-9c1a-2d7b8f0e1a01"
			send := jsonBody(map[string]any{"ref": "s1", "conv": "carol", "client_msg_id": msgID, "body": map[string]string{"text": "hola"}})
			var ack struct {
				Type      string
				Seq       int64
				Duplicate bool
			}
			json.Unmarshal(c.expect(200, "POST", "/v1/send", cust, js, send), &ack)
			if ack.Type != "ack" || ack.Seq != 1 || ack.Duplicate {
				t.Fatalf("send = %+v, want the ack of seq 1", ack)
			}
			json.Unmarshal(c.expect(200, "POST", "/v1/send", cust, js, send), &ack)
			if ack.Type != "ack" || ack.Seq != 1 || !ack.Duplicate {
				t.Fatalf("resend = %+v, want a duplicate ack of seq 1", ack)
			}
			c.expect(400, "POST", "/v1/send", cust, js, jsonBody(map[string]any{"conv": "carol", "client_msg_id": msgID, "body": "not an object"}))
			c.expect(400, "POST", "/v1/send", cust, js, []byte(`{"conv":`))
			c.expect(403, "POST", "/v1/send", other, js, send)
			c.expect(401, "POST", "/v1/send", "", js, send)

			c.expect(202, "POST", "/v1/frames", cust, js, jsonBody(map[string]any{"session": pr.Session, "frames": []any{map[string]string{"type": "typing", "conv": "carol"}}}))
			c.expect(400, "POST", "/v1/frames", cust, js, jsonBody(map[string]any{"session": pr.Session, "frames": []any{map[string]string{"type": "subscribe", "conv": "carol"}}}))
			c.expect(401, "POST", "/v1/frames", "", js, jsonBody(map[string]any{"frames": []any{map[string]string{"type": "typing", "conv": "carol"}}}))

			// History and read cursors (history.go).
			var page transport.HistoryPage
			json.Unmarshal(c.expect(200, "GET", "/v1/conversations/carol/messages", cust, "", nil), &page)
			if len(page.Messages) != 1 || page.Messages[0].ClientMsgID != msgID || page.HasMore {
				t.Fatalf("history = %+v, want the one message sent", page)
			}
			c.expect(200, "GET", "/v1/conversations/carol/messages?after=0&before=2&limit=1", tr.AccessToken, "", nil)
			c.expect(400, "GET", "/v1/conversations/carol/messages?limit=500", cust, "", nil)
			c.expect(403, "GET", "/v1/conversations/carol/messages", other, "", nil)
			c.expect(401, "GET", "/v1/conversations/carol/messages", "", "", nil)
			c.expect(200, "PUT", "/v1/conversations/carol/read", cust, js, jsonBody(map[string]int{"seq": 1}))
			c.expect(200, "GET", "/v1/conversations/carol/read", tr.AccessToken, "", nil)
			c.expect(400, "PUT", "/v1/conversations/carol/read", cust, js, []byte(`[1]`))
			c.expect(403, "PUT", "/v1/conversations/carol/read", other, js, jsonBody(map[string]int{"seq": 1}))
			c.expect(401, "GET", "/v1/conversations/carol/read", "", "", nil)

			// The workflow (conversations.go): carol's conversation is
			// pending (a customer opened it); an agent takes it, tags it,
			// lists and finds it; canned replies; capacities.
			agent, _ := transport.MintToken(transporttest.Secret, "zoe", charla.RoleAgent, time.Hour)
			var list transport.ConversationList
			json.Unmarshal(c.expect(200, "GET", "/v1/conversations?status=pending", agent, "", nil), &list)
			if len(list.Conversations) != 1 || list.Conversations[0].Conv != "carol" || list.Conversations[0].Unread != 1 {
				t.Fatalf("pending list = %+v, want carol with 1 unread", list)
			}
			c.expect(200, "POST", "/v1/conversations/carol/take", agent, "", nil)
			c.expect(200, "PUT", "/v1/conversations/carol/tags", agent, js, jsonBody(map[string]any{"tags": []string{"vip"}}))
			json.Unmarshal(c.expect(200, "GET", "/v1/conversations?assignee=zoe&tag=vip&limit=1", agent, "", nil), &list)
			if len(list.Conversations) != 1 || list.Conversations[0].Status != "open" {
				t.Fatalf("zoe's list = %+v", list)
			}
			c.expect(200, "GET", "/v1/conversations?changed_since=1", agent, "", nil)
			c.expect(400, "GET", "/v1/conversations?status=closed", agent, "", nil)
			c.expect(403, "GET", "/v1/conversations", cust, "", nil)
			c.expect(401, "GET", "/v1/conversations", "", "", nil)
			c.expect(400, "POST", "/v1/conversations/carol/assign", agent, js, jsonBody(map[string]string{"assignee": "no:colons"}))
			c.expect(200, "POST", "/v1/conversations/carol/transfer", agent, js, jsonBody(map[string]string{"assignee": "yuri"}))
			c.expect(403, "POST", "/v1/conversations/carol/resolve", agent, "", nil) // yuri's now
			c.expect(200, "POST", "/v1/conversations/carol/resolve", tr.AccessToken, "", nil)
			c.expect(404, "POST", "/v1/conversations/carol/fly", agent, "", nil)
			c.expect(404, "POST", "/v1/conversations/nobody/take", agent, "", nil)
			var found transport.SearchResult
			json.Unmarshal(c.expect(200, "GET", "/v1/search?q=hola", agent, "", nil), &found)
			if len(found.Messages) != 1 || found.Messages[0].ClientMsgID != msgID {
				t.Fatalf("search = %+v", found)
			}
			c.expect(400, "GET", "/v1/search", agent, "", nil)
			c.expect(200, "PUT", "/v1/canned/saludo", agent, js, jsonBody(map[string]string{"text": "Hola {{customer_name}}, soy {{agent_name}} ({{conv}}, {{customer}}) {{other}}"}))
			c.expect(200, "GET", "/v1/canned", agent, "", nil)
			// Rendered for a conversation: the server's placeholders filled,
			// others left; only by who may see it (carol's is yuri's now).
			root, _ := transport.MintToken(transporttest.Secret, "root", charla.RoleAdmin, time.Hour)
			var canned store.CannedReply
			json.Unmarshal(c.expect(200, "GET", "/v1/conversations/carol/canned/saludo", root, "", nil), &canned)
			if want := "Hola carol, soy root (carol, carol) {{other}}"; canned.Text != want || canned.Code != "saludo" {
				t.Errorf("rendered canned reply %+v, want text %q", canned, want)
			}
			c.expect(403, "GET", "/v1/conversations/carol/canned/saludo", agent, "", nil)
			c.expect(403, "GET", "/v1/conversations/carol/canned/saludo", cust, "", nil)
			c.expect(404, "GET", "/v1/conversations/carol/canned/nope", root, "", nil)
			c.expect(404, "GET", "/v1/conversations/nobody/canned/saludo", root, "", nil)
			c.expect(401, "GET", "/v1/conversations/carol/canned/saludo", "", "", nil)
			c.expect(400, "PUT", "/v1/canned/Bad%20Code", agent, js, jsonBody(map[string]string{"text": "x"}))
			c.expect(204, "DELETE", "/v1/canned/saludo", agent, "", nil)
			c.expect(404, "DELETE", "/v1/canned/saludo", agent, "", nil)
			c.expect(200, "PUT", "/v1/agents/zoe/capacity", tr.AccessToken, js, jsonBody(map[string]int{"capacity": 3}))
			c.expect(403, "PUT", "/v1/agents/zoe/capacity", agent, js, jsonBody(map[string]int{"capacity": 3}))
			c.expect(400, "PUT", "/v1/agents/zoe/capacity", tr.AccessToken, js, jsonBody(map[string]int{"capacity": -5}))
		})
	}
}
