package transport_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/google/uuid"

	"charla"
	"charla/transport"
	"charla/transport/transporttest"
	"charla/wire"
)

// sendN sends n messages to conv over c and waits for their acks.
func sendN(t *testing.T, c *transporttest.Client, conv charla.ConvID, n int) {
	t.Helper()
	for i := range n {
		c.Send(transporttest.SendFrame(conv, uuid.NewString(), fmt.Sprintf("m%d", i+1), ""))
	}
	for range n {
		if f := c.NextOf(wire.TypeAck, transporttest.Wait); f.Conv != conv {
			t.Fatalf("ack = %+v", f)
		}
	}
}

func TestHistoryPaging(t *testing.T) {
	e := transporttest.Start(t)
	c := e.Dial(t, "cus", charla.RoleCustomer)
	sendN(t, c, "cus:h", 250)

	tests := []struct {
		name          string
		query         string
		first, last   charla.Seq // 0, 0: empty
		hasMore       bool
		wantStatus    int
		wantErrorCode charla.Code
	}{
		{"default page from the start", "", 1, 50, true, 200, ""},
		{"after", "?after=10&limit=5", 11, 15, true, 200, ""},
		{"after reaching the head", "?after=240&limit=20", 241, 250, false, 200, ""},
		{"after the head", "?after=250", 0, 0, false, 200, ""},
		{"before: the newest page below it", "?before=101&limit=10", 91, 100, true, 200, ""},
		{"before near the start", "?before=4&limit=10", 1, 3, false, 200, ""},
		{"before beyond the head", "?before=1000&limit=200", 0, 0, true, 200, ""},
		{"before and after", "?after=95&before=101&limit=10", 96, 100, false, 200, ""},
		{"before and after, limited", "?after=50&before=101&limit=10", 91, 100, true, 200, ""},
		{"limit at the cap", "?limit=200", 1, 200, true, 200, ""},
		{"limit over the cap", "?limit=201", 0, 0, false, 400, charla.CodeBadRequest},
		{"limit zero", "?limit=0", 0, 0, false, 400, charla.CodeBadRequest},
		{"garbage seq", "?after=x", 0, 0, false, 400, charla.CodeBadRequest},
		{"before not above after+1", "?after=5&before=6", 0, 0, false, 400, charla.CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := e.HTTPURL("/v1/conversations/cus:h/messages"+tt.query, "cus", charla.RoleCustomer)
			status, body := transporttest.Do(t, http.MethodGet, u, nil, nil)
			if status != tt.wantStatus {
				t.Fatalf("status %d %s, want %d", status, body, tt.wantStatus)
			}
			if tt.wantErrorCode != "" {
				var p transport.Problem
				if err := json.Unmarshal(body, &p); err != nil || p.Error.Code != tt.wantErrorCode || p.Error.Message == "" {
					t.Fatalf("problem = %s, want code %s", body, tt.wantErrorCode)
				}
				return
			}
			var page transport.HistoryPage
			if err := json.Unmarshal(body, &page); err != nil {
				t.Fatal(err)
			}
			if page.Conv != "cus:h" || page.HasMore != tt.hasMore || page.Messages == nil {
				t.Fatalf("page conv %q has_more %v (want %v), messages nil: %v", page.Conv, page.HasMore, tt.hasMore, page.Messages == nil)
			}
			if tt.first == 0 {
				if len(page.Messages) != 0 {
					t.Fatalf("%d messages, want none", len(page.Messages))
				}
				return
			}
			if n := len(page.Messages); n != int(tt.last-tt.first+1) {
				t.Fatalf("%d messages, want %d..%d", n, tt.first, tt.last)
			}
			for i, m := range page.Messages {
				if m.Seq != tt.first+charla.Seq(i) || m.Conv != "cus:h" || m.Sender.ID != "cus" || string(m.Body) != fmt.Sprintf(`{"text":"m%d"}`, m.Seq) || m.TS.IsZero() {
					t.Fatalf("message %d = %+v", i, m)
				}
			}
		})
	}
}

func TestHistoryAndCursorsAuthorization(t *testing.T) {
	e := transporttest.Start(t)
	c := e.Dial(t, "cus", charla.RoleCustomer)
	sendN(t, c, "cus", 3)
	tests := []struct {
		name   string
		user   string
		role   charla.Role
		conv   string
		status int
	}{
		{"owner", "cus", charla.RoleCustomer, "cus", 200},
		{"another customer", "eve", charla.RoleCustomer, "cus", 403},
		{"a customer on a prefix look-alike", "cu", charla.RoleCustomer, "cus", 403},
		{"agent", "ana", charla.RoleAgent, "cus", 200},
		{"admin", "root", charla.RoleAdmin, "cus", 200},
		{"invalid conv", "ana", charla.RoleAgent, "bad%20conv", 400},
	}
	for _, tt := range tests {
		for _, path := range []string{"/messages", "/read"} {
			t.Run(tt.name+path, func(t *testing.T) {
				status, body := transporttest.Do(t, http.MethodGet, e.HTTPURL("/v1/conversations/"+tt.conv+path, tt.user, tt.role), nil, nil)
				if status != tt.status {
					t.Fatalf("status %d %s, want %d", status, body, tt.status)
				}
			})
		}
	}
	t.Run("no credentials", func(t *testing.T) {
		status, body := transporttest.Do(t, http.MethodGet, "http://"+e.Addr+"/v1/conversations/cus/messages", nil, nil)
		if status != 401 {
			t.Fatalf("status %d %s, want 401", status, body)
		}
	})
	t.Run("foreign origin", func(t *testing.T) {
		status, _ := transporttest.Do(t, http.MethodGet, e.HTTPURL("/v1/conversations/cus/messages", "cus", charla.RoleCustomer), nil,
			http.Header{"Origin": {"https://evil.example"}})
		if status != 403 {
			t.Fatalf("status %d, want 403", status)
		}
	})
}

func TestReadCursorsGetPut(t *testing.T) {
	e := transporttest.Start(t)
	cus := e.Dial(t, "cus", charla.RoleCustomer)
	sendN(t, cus, "cus", 5)
	ana := e.Dial(t, "ana", charla.RoleAgent)
	ana.Subscribe("cus", 5)

	get := func() map[string]charla.Seq {
		t.Helper()
		var rc transport.ReadCursors
		transporttest.DoJSON(t, http.MethodGet, e.HTTPURL("/v1/conversations/cus/read", "cus", charla.RoleCustomer), nil, 200, &rc)
		if rc.Conv != "cus" || rc.Cursors == nil {
			t.Fatalf("cursors = %+v", rc)
		}
		return rc.Cursors
	}
	if got := get(); len(got) != 0 {
		t.Fatalf("cursors before any read = %v", got)
	}
	put := func(seq any, want int) {
		t.Helper()
		var rc transport.ReadCursor
		out := any(&rc)
		if want != 200 {
			out = nil
		}
		transporttest.DoJSON(t, http.MethodPut, e.HTTPURL("/v1/conversations/cus/read", "cus", charla.RoleCustomer), fmt.Sprintf(`{"seq":%v}`, seq), want, out)
		if want == 200 && (rc.Conv != "cus" || rc.User != "cus" || fmt.Sprint(rc.Seq) != fmt.Sprint(seq)) {
			t.Fatalf("put answer = %+v", rc)
		}
	}
	put(3, 200)
	// The others subscribed hear of it as from a read frame.
	if f := ana.NextOf(wire.TypeRead, transporttest.Wait); f.User != "cus" || f.Seq != 3 {
		t.Fatalf("read frame = %+v", f)
	}
	if got := get(); got["cus"] != 3 {
		t.Fatalf("cursors after PUT 3 = %v", got)
	}
	put(2, 200) // cursors only move forward
	if got := get(); got["cus"] != 3 {
		t.Fatalf("cursors after PUT 2 = %v", got)
	}
	put(6, 400) // beyond the head
	put(0, 400)
	put(`"x"`, 400)
	status, _ := transporttest.Do(t, http.MethodPut, e.HTTPURL("/v1/conversations/cus/read", "eve", charla.RoleCustomer), `{"seq":1}`, nil)
	if status != 403 {
		t.Fatalf("PUT by another customer = %d, want 403", status)
	}
	status, _ = transporttest.Do(t, http.MethodPut, e.HTTPURL("/v1/conversations/cus/read", "cus", charla.RoleCustomer), `[1]`, nil)
	if status != 400 {
		t.Fatalf("PUT of an array = %d, want 400", status)
	}
}
