package actors

import (
	"encoding/json"
	"fmt"

	"charla"
	"charla/store"
)

// Outbound bodies (docs/PROTOCOL.md, "WhatsApp"): {"text": ...} alone is a
// text message; a body with "type" carries the WhatsApp object under the key
// of that type, and keeps "text" as the fallback other clients show.
//
//	{"text": "hi"}
//	{"type": "template", "template": {"name": ..., "language": {"code": ...}, "components": [...]}, "text": ...}
//	{"type": "interactive", "interactive": {"type": "button" | "list", ...}, "text": ...}
//	{"type": "image" | "video" | "audio" | "document" | "sticker", "<type>": {"id": <media id>, ...}, "text": ...}
//
// The object under the type's key is passed to the Graph API as it is: the
// engine checks only what it must to send it (a template's name and
// language, an interactive's type, a media id).

// outboundKind is how an outbound body is sent.
type outboundKind struct {
	graphType string
	// freeForm messages need the customer-service window open; templates
	// do not.
	freeForm bool
}

// mediaTypes are the media a body may send by id.
var mediaTypes = map[string]bool{"image": true, "video": true, "audio": true, "document": true, "sticker": true}

// graphPayload builds the body of POST /{phone-number-id}/messages for e,
// sent to waID. The callback data names the message in the platform's
// status notifications (biz_opaque_callback_data), which is how a send
// whose outcome the engine lost is recognised (see reconcile).
func graphPayload(e store.OutboxEntry, waID string) ([]byte, outboundKind, error) {
	var body map[string]json.RawMessage
	if err := json.Unmarshal(e.Body, &body); err != nil {
		return nil, outboundKind{}, fmt.Errorf("body is not a JSON object: %w", err)
	}
	p := map[string]any{
		"messaging_product":        "whatsapp",
		"recipient_type":           "individual",
		"to":                       waID,
		"biz_opaque_callback_data": callbackData(e.Conv, e.Seq),
	}
	var typ string
	if raw, ok := body["type"]; ok {
		if err := json.Unmarshal(raw, &typ); err != nil {
			return nil, outboundKind{}, fmt.Errorf(`"type" must be a string`)
		}
	}
	switch {
	case typ == "" || typ == "text":
		var text string
		if err := json.Unmarshal(body["text"], &text); err != nil || text == "" {
			return nil, outboundKind{}, fmt.Errorf(`a text message needs a non-empty "text"`)
		}
		p["type"] = "text"
		p["text"] = map[string]any{"body": text, "preview_url": false}
		return marshalPayload(p, outboundKind{graphType: "text", freeForm: true})
	case typ == "template":
		var t struct {
			Name     string `json:"name"`
			Language struct {
				Code string `json:"code"`
			} `json:"language"`
		}
		if err := json.Unmarshal(body["template"], &t); err != nil || t.Name == "" || t.Language.Code == "" {
			return nil, outboundKind{}, fmt.Errorf(`a template body needs "template": {"name": ..., "language": {"code": ...}}`)
		}
		p["type"], p["template"] = "template", body["template"]
		return marshalPayload(p, outboundKind{graphType: "template"})
	case typ == "interactive":
		var i struct {
			Type string `json:"type"`
		}
		if err := json.Unmarshal(body["interactive"], &i); err != nil || (i.Type != "button" && i.Type != "list") {
			return nil, outboundKind{}, fmt.Errorf(`an interactive body needs "interactive": {"type": "button" or "list", ...}`)
		}
		p["type"], p["interactive"] = "interactive", body["interactive"]
		return marshalPayload(p, outboundKind{graphType: "interactive", freeForm: true})
	case mediaTypes[typ]:
		var m struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(body[typ], &m); err != nil || m.ID == "" {
			return nil, outboundKind{}, fmt.Errorf(`a %s body needs "%s": {"id": <media id>, ...}`, typ, typ)
		}
		p["type"], p[typ] = typ, body[typ]
		return marshalPayload(p, outboundKind{graphType: typ, freeForm: true})
	default:
		return nil, outboundKind{}, fmt.Errorf("a body of type %q cannot be sent to WhatsApp (text, template, interactive, image, video, audio, document, sticker)", typ)
	}
}

func marshalPayload(p map[string]any, k outboundKind) ([]byte, outboundKind, error) {
	b, err := json.Marshal(p)
	return b, k, err
}

// callbackData is the biz_opaque_callback_data of an outbound message:
// "<conv>#<seq>" ('#' is not a conversation id character).
func callbackData(conv charla.ConvID, seq charla.Seq) string {
	return fmt.Sprintf("%s#%d", conv, seq)
}
