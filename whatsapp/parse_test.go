package whatsapp_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"charla"
	"charla/whatsapp"
)

// batchJSON is a payload as the platform posts it: two entries, the first
// with two changes (two business numbers), messages of two customers, a
// contact name, statuses (one failed) and a message without an id.
const batchJSON = `{"object":"whatsapp_business_account","entry":[
 {"id":"WABA1","changes":[
  {"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001","phone_number_id":"1001"},
   "contacts":[{"profile":{"name":"Ana"},"wa_id":"34600111222"}],
   "messages":[
    {"from":"34600111222","id":"wamid.A2","timestamp":"1700000002","type":"text","text":{"body":"second"}},
    {"from":"34600111222","id":"wamid.A1","timestamp":"1700000001","type":"text","text":{"body":"first"}}]}},
  {"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550002","phone_number_id":"1002"},
   "messages":[{"from":"34600111222","id":"wamid.B1","timestamp":"1700000001","type":"image","image":{"id":"MEDIA1","mime_type":"image/jpeg","caption":"look"}}],
   "statuses":[
    {"id":"wamid.OUT1","status":"read","timestamp":"1700000005","recipient_id":"34600111222"},
    {"id":"wamid.OUT2","status":"failed","timestamp":"1700000006","recipient_id":"34600111222",
     "errors":[{"code":131047,"title":"Re-engagement message","message":"Re-engagement message","error_data":{"details":"More than 24 hours have passed"}}]}]}}]},
 {"id":"WABA2","changes":[
  {"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001","phone_number_id":"1001"},
   "contacts":[{"profile":{"name":"Bo"},"wa_id":"34600333444"}],
   "messages":[
    {"from":"34600333444","id":"wamid.C1","timestamp":"1700000003","type":"location","location":{"latitude":40.4,"longitude":-3.7,"name":"Sol"}},
    {"from":"34600333444","timestamp":"1700000004","type":"text","text":{"body":"no id"}}]}}]}]}`

func TestParseBatch(t *testing.T) {
	b, err := whatsapp.Parse([]byte(batchJSON))
	if err != nil {
		t.Fatal(err)
	}
	type msg struct {
		conv, wamid string
		ts          int64
		arrival     int
	}
	var got []msg
	for _, m := range b.Messages {
		got = append(got, msg{string(m.Conv()), m.Message.ID, m.Time.Unix(), m.Arrival})
	}
	want := []msg{
		{"wa.34600111222:1001", "wamid.A2", 1700000002, 0},
		{"wa.34600111222:1001", "wamid.A1", 1700000001, 1},
		{"wa.34600111222:1002", "wamid.B1", 1700000001, 2},
		{"wa.34600333444:1001", "wamid.C1", 1700000003, 3},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("messages:\n got %v\nwant %v", got, want)
	}
	whatsapp.SortInbound(b.Messages)
	var order []string
	for _, m := range b.Messages {
		order = append(order, m.Message.ID)
	}
	if w := []string{"wamid.A1", "wamid.B1", "wamid.A2", "wamid.C1"}; !reflect.DeepEqual(order, w) {
		t.Fatalf("sorted: %v, want %v (timestamp, then arrival)", order, w)
	}
	wantContacts := []whatsapp.ContactUpdate{
		{WaID: "34600111222", PhoneNumberID: "1001", Name: "Ana", LastInbound: time.Unix(1700000002, 0).UTC()},
		{WaID: "34600111222", PhoneNumberID: "1002", LastInbound: time.Unix(1700000001, 0).UTC()},
		{WaID: "34600333444", PhoneNumberID: "1001", Name: "Bo", LastInbound: time.Unix(1700000003, 0).UTC()},
	}
	if !reflect.DeepEqual(b.Contacts, wantContacts) {
		t.Fatalf("contacts:\n got %+v\nwant %+v", b.Contacts, wantContacts)
	}
	wantStatuses := []whatsapp.Status{
		{PhoneNumberID: "1002", MessageID: "wamid.OUT1", RecipientID: "34600111222", Status: whatsapp.StatusRead, Timestamp: time.Unix(1700000005, 0).UTC()},
		{PhoneNumberID: "1002", MessageID: "wamid.OUT2", RecipientID: "34600111222", Status: whatsapp.StatusFailed, Timestamp: time.Unix(1700000006, 0).UTC(),
			Error: &whatsapp.StatusError{Code: 131047, Title: "Re-engagement message", Details: "More than 24 hours have passed"}},
	}
	if !reflect.DeepEqual(b.Statuses, wantStatuses) {
		t.Fatalf("statuses:\n got %+v\nwant %+v", b.Statuses, wantStatuses)
	}
	if len(b.Problems) != 1 || !strings.Contains(b.Problems[0], "entry[1].changes[0].messages[1]: id missing") {
		t.Fatalf("problems = %q, want the message without an id", b.Problems)
	}
}

func TestParseProblems(t *testing.T) {
	wrap := func(value string) string {
		return `{"object":"whatsapp_business_account","entry":[{"id":"W","changes":[{"field":"messages","value":` + value + `}]}]}`
	}
	tests := []struct {
		name     string
		body     string
		malform  bool
		problem  string
		messages int
	}{
		{"not json", `{"entry":`, true, "", 0},
		{"an array", `[]`, true, "", 0},
		{"two objects", `{"entry":[]} {}`, true, "", 0},
		{"no entry", `{"object":"whatsapp_business_account"}`, true, "", 0},
		{"empty entry list", `{"object":"whatsapp_business_account","entry":[]}`, false, "", 0},
		{"bad phone number id", wrap(`{"metadata":{"phone_number_id":"12a"},"messages":[{"from":"1","id":"w","timestamp":"1","type":"text"}]}`), false, "is not a number", 0},
		{"bad timestamp", wrap(`{"metadata":{"phone_number_id":"1"},"messages":[{"from":"1","id":"w","timestamp":"soon","type":"text"}]}`), false, "not Unix seconds", 0},
		{"no type", wrap(`{"metadata":{"phone_number_id":"1"},"messages":[{"from":"1","id":"w","timestamp":"1"}]}`), false, "type missing", 0},
		{"from with a colon", wrap(`{"metadata":{"phone_number_id":"1"},"messages":[{"from":"1:2","id":"w","timestamp":"1","type":"text"}]}`), false, "from: wa_id", 0},
		{"unknown status", wrap(`{"metadata":{"phone_number_id":"1"},"statuses":[{"id":"w","status":"lost","timestamp":"1"}]}`), false, "not sent, delivered", 0},
		{"other field", `{"object":"whatsapp_business_account","entry":[{"id":"W","changes":[{"field":"account_update","value":{}}]}]}`, false, `field "account_update" ignored`, 0},
		{"platform error", wrap(`{"metadata":{"phone_number_id":"1"},"errors":[{"code":131000,"title":"Something went wrong"}]}`), false, "platform error 131000", 0},
		{"unknown type kept", wrap(`{"metadata":{"phone_number_id":"1"},"messages":[{"from":"1","id":"w","timestamp":"1","type":"hologram","hologram":{"x":1}}]}`), false, "", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := whatsapp.Parse([]byte(tt.body))
			if tt.malform != errors.Is(err, whatsapp.ErrMalformed) {
				t.Fatalf("err = %v, malformed want %v", err, tt.malform)
			}
			if tt.problem == "" && len(b.Problems) != 0 {
				t.Fatalf("problems %q, want none", b.Problems)
			}
			if tt.problem != "" && (len(b.Problems) != 1 || !strings.Contains(b.Problems[0], tt.problem)) {
				t.Fatalf("problems %q, want one with %q", b.Problems, tt.problem)
			}
			if len(b.Messages) != tt.messages {
				t.Fatalf("%d messages, want %d", len(b.Messages), tt.messages)
			}
		})
	}
}

func TestMessageBody(t *testing.T) {
	parse := func(msg string) whatsapp.Message {
		var m whatsapp.Message
		if err := json.Unmarshal([]byte(msg), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	tests := []struct {
		name string
		msg  string
		want string // the body as JSON
	}{
		{"text", `{"type":"text","text":{"body":"hola"}}`, `{"text":"hola"}`},
		{"text answering", `{"type":"text","text":{"body":"yes"},"context":{"from":"1555","id":"wamid.X"}}`,
			`{"text":"yes","context":{"id":"wamid.X","from":"1555","forwarded":false}}`},
		{"NUL and bad UTF-8 cleaned", `{"type":"text","text":{"body":"a\u0000b\ud800"}}`, `{"text":"ab\ufffd"}`},
		{"image with caption", `{"type":"image","image":{"id":"M","mime_type":"image/jpeg","caption":"my cat"}}`,
			`{"type":"image","text":"my cat","image":{"id":"M","mime_type":"image/jpeg","caption":"my cat"}}`},
		{"image", `{"type":"image","image":{"id":"M"}}`, `{"type":"image","text":"[image]","image":{"id":"M"}}`},
		{"voice", `{"type":"audio","audio":{"id":"M","voice":true}}`, `{"type":"audio","text":"[voice message]","audio":{"id":"M","voice":true}}`},
		{"document", `{"type":"document","document":{"id":"M","filename":"invoice.pdf"}}`, `{"type":"document","text":"invoice.pdf","document":{"id":"M","filename":"invoice.pdf"}}`},
		{"sticker", `{"type":"sticker","sticker":{"id":"M","animated":false}}`, `{"type":"sticker","text":"[sticker]","sticker":{"id":"M","animated":false}}`},
		{"video", `{"type":"video","video":{"id":"M"}}`, `{"type":"video","text":"[video]","video":{"id":"M"}}`},
		{"location", `{"type":"location","location":{"latitude":1.5,"longitude":2,"name":"Shop"}}`,
			`{"type":"location","text":"Shop","location":{"latitude":1.5,"longitude":2,"name":"Shop"}}`},
		{"location unnamed", `{"type":"location","location":{"latitude":1.5,"longitude":2}}`,
			`{"type":"location","text":"[location 1.500000, 2.000000]","location":{"latitude":1.5,"longitude":2}}`},
		{"contacts", `{"type":"contacts","contacts":[{"name":{"formatted_name":"Eva"}},{"name":{"formatted_name":"Leo"}}]}`,
			`{"type":"contacts","text":"[contact: Eva, Leo]","contacts":[{"name":{"formatted_name":"Eva"}},{"name":{"formatted_name":"Leo"}}]}`},
		{"button reply", `{"type":"interactive","interactive":{"type":"button_reply","button_reply":{"id":"yes","title":"Yes please"}}}`,
			`{"type":"interactive","text":"Yes please","interactive":{"type":"button_reply","button_reply":{"id":"yes","title":"Yes please"}}}`},
		{"list reply", `{"type":"interactive","interactive":{"type":"list_reply","list_reply":{"id":"r2","title":"Red","description":"size M"}}}`,
			`{"type":"interactive","text":"Red","interactive":{"type":"list_reply","list_reply":{"id":"r2","title":"Red","description":"size M"}}}`},
		{"template button", `{"type":"button","button":{"payload":"P","text":"Stop"}}`, `{"type":"button","text":"Stop","button":{"payload":"P","text":"Stop"}}`},
		{"reaction", `{"type":"reaction","reaction":{"message_id":"wamid.Y","emoji":"👍"}}`,
			`{"type":"reaction","text":"[reaction 👍]","reaction":{"message_id":"wamid.Y","emoji":"👍"}}`},
		{"reaction removed", `{"type":"reaction","reaction":{"message_id":"wamid.Y"}}`,
			`{"type":"reaction","text":"[reaction removed]","reaction":{"message_id":"wamid.Y"}}`},
		{"unsupported", `{"type":"unsupported","errors":[{"code":131051,"title":"Message type unknown"}]}`,
			`{"type":"unsupported","text":"[unsupported message]","errors":[{"code":131051,"title":"Message type unknown"}]}`},
		{"unknown", `{"type":"hologram","hologram":{"depth":3}}`, `{"type":"hologram","text":"[hologram message]","hologram":{"depth":3}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := json.Marshal(parse(tt.msg).Body())
			if err != nil {
				t.Fatal(err)
			}
			var g, w any
			_ = json.Unmarshal(got, &g)
			if err := json.Unmarshal([]byte(tt.want), &w); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(g, w) {
				t.Fatalf("body\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestMediaObject(t *testing.T) {
	for typ, want := range map[string]bool{"image": true, "video": true, "audio": true, "document": true, "sticker": true, "text": false, "location": false} {
		var m whatsapp.Message
		if err := json.Unmarshal([]byte(`{"type":"`+typ+`","`+typ+`":{"id":"M1","body":"x"}}`), &m); err != nil {
			t.Fatal(err)
		}
		if got := m.MediaObject() != nil; got != want {
			t.Errorf("%s: has media %v, want %v", typ, got, want)
		}
	}
}

// FuzzParse: whatever the bytes, Parse neither panics nor returns a
// message that would not make a valid conversation, and every body it
// yields is storable (a JSON object with a "text" string).
func FuzzParse(f *testing.F) {
	f.Add([]byte(batchJSON))
	f.Add([]byte(`{"entry":[{"changes":[{"value":{"metadata":{"phone_number_id":"1"},"messages":[{"from":"2","id":"x","timestamp":"3","type":"image","image":null}]}}]}]}`))
	f.Add([]byte(`{"entry":[{"changes":[{"value":{"metadata":{"phone_number_id":"1"},"messages":[{"from":"2","id":"x","timestamp":"3","type":"errors"}]}}]}]}`))
	f.Add([]byte(`{"entry":null}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		b, err := whatsapp.Parse(body)
		if err != nil {
			return
		}
		for _, m := range b.Messages {
			if err := m.Conv().Validate(); err != nil {
				t.Fatalf("message %q in an invalid conversation: %v", m.Message.ID, err)
			}
			raw, err := json.Marshal(m.Message.Body())
			if err != nil {
				t.Fatalf("body does not marshal: %v", err)
			}
			if err := charla.ValidateBody(raw, 1<<30); err != nil {
				t.Fatalf("body %s is not storable: %v", raw, err)
			}
		}
	})
}
