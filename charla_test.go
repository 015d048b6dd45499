package charla

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestValidateBody(t *testing.T) {
	cases := []struct {
		body string
		code Code // "" = valid
	}{
		{`{"text":"hola"}`, ""},
		{`{"text":"hola","extra":[1,2]}`, ""},
		{`{"text":""}`, ""},
		{`{"text":"a\\u0000b"}`, ""}, // an escaped backslash, then literal text
		{`{"text":"a\u0000b"}`, CodeBadRequest},
		{`{"text":"ok","meta":{"x":"\\\u0000"}}`, CodeBadRequest},
		{`{"text":"\\u0000"}`, ""}, // the text \u0000, not NUL
		{`{"text":"\\\u0000"}`, CodeBadRequest},
		{`{"text":"\ud800"}`, CodeBadRequest},               // lone high surrogate (SQLSTATE 22P02 in jsonb)
		{`{"text":"a\uD800b"}`, CodeBadRequest},             // upper-case hex
		{`{"text":"\ud800\u0041"}`, CodeBadRequest},         // high followed by a non-surrogate
		{`{"text":"\ud800\ud800"}`, CodeBadRequest},         // two highs
		{`{"text":"\udc00"}`, CodeBadRequest},               // lone low surrogate
		{`{"text":"x","k":"\udfff\ud800"}`, CodeBadRequest}, // a pair in the wrong order
		{`{"text":"\ud83d\ude00"}`, ""},                     // 😀 as a pair
		{`{"text":"\uD83D\uDE00 ok"}`, ""},
		{`{"text":"\\ud800"}`, ""}, // the text \ud800
		{`{"text":"\u00e9\n\"\\"}`, ""},
		{"{\"text\":\"\xed\xa0\x80\"}", CodeBadRequest}, // a raw surrogate: invalid UTF-8
		{"{\"text\":\"\xff\"}", CodeBadRequest},
		{`{"text":"ñ 😀"}`, ""},
		{`{"img":"x"}`, CodeBadRequest},
		{`{"text":5}`, CodeBadRequest},
		{`"text"`, CodeBadRequest},
		{`[]`, CodeBadRequest},
		{``, CodeBadRequest},
		{`{"text":"` + strings.Repeat("x", 100) + `"}`, CodeTooLarge},
	}
	for _, tc := range cases {
		err := ValidateBody(json.RawMessage(tc.body), 64)
		switch {
		case tc.code == "" && err != nil:
			t.Errorf("%s: unexpected %v", tc.body, err)
		case tc.code != "" && (err == nil || AsError(err).Code != tc.code):
			t.Errorf("%s: got %v, want %s", tc.body, err, tc.code)
		}
	}
}

func TestValidateIDs(t *testing.T) {
	for _, tc := range []struct {
		conv ConvID
		ok   bool
	}{{"c1", true}, {"wa:+34600111222", true}, {"a@b.c_d-e", true}, {"", false}, {"a b", false}, {"ñ", false}, {ConvID(strings.Repeat("a", 129)), false}} {
		if err := tc.conv.Validate(); (err == nil) != tc.ok {
			t.Errorf("conv %q: %v", tc.conv, err)
		}
	}
	for _, tc := range []struct {
		id string
		ok bool
	}{{"0b8e4c1e-3f5a-4e8b-9d1c-2a3b4c5d6e7f", true}, {"0B8E4C1E-3F5A-4E8B-9D1C-2A3B4C5D6E7F", true}, {"", false}, {"0b8e4c1e3f5a4e8b9d1c2a3b4c5d6e7f", false}, {"0b8e4c1e-3f5a-4e8b-9d1c-2a3b4c5d6e7g", false}} {
		if err := ValidateClientMsgID(tc.id); (err == nil) != tc.ok {
			t.Errorf("id %q: %v", tc.id, err)
		}
	}
	customer := Sender{ID: "c7", Role: RoleCustomer}
	for conv, ok := range map[ConvID]bool{"c7": true, "c7:web": true, "c7:web:2": true, "c70": false, "c8": false, "c7x:y": false} {
		if customer.CanAccess(conv) != ok {
			t.Errorf("customer c7 on %s: want %v", conv, ok)
		}
	}
	if !(Sender{ID: "a", Role: RoleAgent}).CanAccess("anything") {
		t.Error("agents serve every conversation")
	}
}

func TestValidateUserID(t *testing.T) {
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"0b8e4c1e-3f5a-4e8b-9d1c-2a3b4c5d6e7f", true}, // Supabase subject
		{"34600111222", true},                          // WhatsApp id
		{"ana.lopez+soporte@example.com", true},
		{strings.Repeat("a", MaxUserIDLen), true},
		{"", false},
		{"   ", false},
		{"bob:x", false}, // would own bob:x:*, inside bob's namespace
		{"bob x", false},
		{"bob\x00", false},
		{"bob\n", false},
		{"ñandú", false},
		{strings.Repeat("a", MaxUserIDLen+1), false},
	} {
		if err := ValidateUserID(tc.id); (err == nil) != tc.ok {
			t.Errorf("user id %q: %v, want ok=%v", tc.id, err, tc.ok)
		}
	}
}

func TestWhatsAppConv(t *testing.T) {
	c := WhatsAppConv("1065", "5215551234567")
	if err := c.Validate(); err != nil {
		t.Fatalf("%s does not validate: %v", c, err)
	}
	if c.Owner() != "wa.5215551234567" {
		t.Errorf("owner of %s = %q", c, c.Owner())
	}
	wa, phone, ok := c.WhatsApp()
	if !ok || wa != "5215551234567" || phone != "1065" {
		t.Errorf("WhatsApp() of %s = %q, %q, %v", c, wa, phone, ok)
	}
	for _, other := range []ConvID{"alice:support", "wa.:1065", "wa.123", "wax.1:2", "alice"} {
		if _, _, ok := other.WhatsApp(); ok {
			t.Errorf("%s is not a WhatsApp conversation", other)
		}
	}
}
