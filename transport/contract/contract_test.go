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

// TestContract runs every documented REST endpoint of login, media and
// health through its answers on both stores.
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
		})
	}
}
