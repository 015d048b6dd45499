package whatsapp

import (
	"encoding/json"
	"time"
)

// The webhook payload of the Cloud API, as the platform posts it to
// /webhooks/whatsapp (field "messages" of a WhatsApp Business Account). Only
// what the engine reads is typed; each message also keeps its raw JSON, so a
// type this package does not know is still stored whole.

// Payload is one webhook POST: one or more entries (business accounts), each
// with one or more changes.
type Payload struct {
	Object string  `json:"object"`
	Entry  []Entry `json:"entry"`
}

// Entry is the part of a payload about one WhatsApp Business Account.
type Entry struct {
	ID      string   `json:"id"`
	Changes []Change `json:"changes"`
}

// Change is one notification: Field "messages" carries messages and statuses.
type Change struct {
	Field string `json:"field"`
	Value Value  `json:"value"`
}

// Value is what happened on one business phone number.
type Value struct {
	MessagingProduct string          `json:"messaging_product"`
	Metadata         Metadata        `json:"metadata"`
	Contacts         []Contact       `json:"contacts,omitempty"`
	Messages         []Message       `json:"messages,omitempty"`
	Statuses         []StatusPayload `json:"statuses,omitempty"`
	Errors           []ErrorPayload  `json:"errors,omitempty"`
}

// Metadata names the business phone number a change is about.
type Metadata struct {
	DisplayPhoneNumber string `json:"display_phone_number"`
	PhoneNumberID      string `json:"phone_number_id"`
}

// Contact is the customer's WhatsApp profile as the platform knows it.
type Contact struct {
	Profile struct {
		Name string `json:"name"`
	} `json:"profile"`
	WaID string `json:"wa_id"`
}

// Message is one inbound customer message. The field named after Type
// ("text", "image", "location"…) holds its content; Raw is the whole object
// as received.
type Message struct {
	From      string          `json:"from"`
	ID        string          `json:"id"`
	Timestamp string          `json:"timestamp"`
	Type      string          `json:"type"`
	Context   *MessageContext `json:"context,omitempty"`
	Text      *struct {
		Body string `json:"body"`
	} `json:"text,omitempty"`
	Image    *Media `json:"image,omitempty"`
	Video    *Media `json:"video,omitempty"`
	Audio    *Media `json:"audio,omitempty"`
	Document *Media `json:"document,omitempty"`
	Sticker  *Media `json:"sticker,omitempty"`
	Location *struct {
		Latitude  float64 `json:"latitude"`
		Longitude float64 `json:"longitude"`
		Name      string  `json:"name,omitempty"`
		Address   string  `json:"address,omitempty"`
	} `json:"location,omitempty"`
	Contacts []struct {
		Name struct {
			FormattedName string `json:"formatted_name"`
		} `json:"name"`
	} `json:"contacts,omitempty"`
	Interactive *struct {
		Type        string `json:"type"`
		ButtonReply *Reply `json:"button_reply,omitempty"`
		ListReply   *Reply `json:"list_reply,omitempty"`
	} `json:"interactive,omitempty"`
	Button *struct {
		Payload string `json:"payload"`
		Text    string `json:"text"`
	} `json:"button,omitempty"`
	Reaction *struct {
		MessageID string `json:"message_id"`
		Emoji     string `json:"emoji"`
	} `json:"reaction,omitempty"`
	Errors []ErrorPayload `json:"errors,omitempty"`

	// Raw is the message object exactly as received.
	Raw json.RawMessage `json:"-"`
}

// UnmarshalJSON decodes m and keeps its raw bytes in Raw.
func (m *Message) UnmarshalJSON(b []byte) error {
	type plain Message
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*m = Message(p)
	m.Raw = append(json.RawMessage(nil), b...)
	return nil
}

// MarshalJSON writes Raw when the message was decoded, so that a parsed
// payload marshals back to what was received.
func (m Message) MarshalJSON() ([]byte, error) {
	if len(m.Raw) > 0 {
		return m.Raw, nil
	}
	type plain Message
	return json.Marshal(plain(m))
}

// MessageContext links a message to the one it answers or forwards.
type MessageContext struct {
	From      string `json:"from,omitempty"`
	ID        string `json:"id,omitempty"`
	Forwarded bool   `json:"forwarded,omitempty"`
}

// Media is an inbound image, video, audio, document or sticker: ID is the
// Graph API media id to download it by (see Client.Media).
type Media struct {
	ID       string `json:"id"`
	MimeType string `json:"mime_type,omitempty"`
	SHA256   string `json:"sha256,omitempty"`
	Caption  string `json:"caption,omitempty"`
	Filename string `json:"filename,omitempty"`
	Voice    bool   `json:"voice,omitempty"`
	Animated bool   `json:"animated,omitempty"`
}

// Reply is the customer's choice on an interactive button or list.
type Reply struct {
	ID          string `json:"id"`
	Title       string `json:"title"`
	Description string `json:"description,omitempty"`
}

// StatusPayload is one status notification of an outgoing message, as
// received; Parse turns it into a Status.
type StatusPayload struct {
	ID                    string         `json:"id"`
	Status                string         `json:"status"`
	Timestamp             string         `json:"timestamp"`
	RecipientID           string         `json:"recipient_id"`
	BizOpaqueCallbackData string         `json:"biz_opaque_callback_data,omitempty"`
	Errors                []ErrorPayload `json:"errors,omitempty"`
}

// ErrorPayload is an error object of a webhook (a failed status, an
// unsupported message, a change-level error).
type ErrorPayload struct {
	Code      int    `json:"code"`
	Title     string `json:"title,omitempty"`
	Message   string `json:"message,omitempty"`
	ErrorData *struct {
		Details string `json:"details,omitempty"`
	} `json:"error_data,omitempty"`
}

// details is the most specific text of e.
func (e ErrorPayload) details() string {
	if e.ErrorData != nil && e.ErrorData.Details != "" {
		return e.ErrorData.Details
	}
	return e.Message
}

// parseUnix reads the platform's timestamps: decimal Unix seconds in a
// string.
func parseUnix(s string) (time.Time, bool) {
	var n int64
	if s == "" || len(s) > 12 {
		return time.Time{}, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return time.Time{}, false
		}
		n = n*10 + int64(s[i]-'0')
	}
	return time.Unix(n, 0).UTC(), true
}
