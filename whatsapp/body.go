package whatsapp

import (
	"encoding/json"
	"fmt"
	"strings"
)

// The body of an inbound message as subscribers get it (docs/PROTOCOL.md,
// "WhatsApp messages"): a text is {"text": …}; every other type is
// {"type": t, t: <the platform's object for t>, "text": <fallback>}, so a
// client that renders only text still shows something, and one that knows
// the type has all of it. Downloaded media add "media" (see the inbound
// actor). A message answering another carries "context".

// MediaObject returns the downloadable part of an image, video, audio,
// document or sticker message, nil for other types or without a media id.
func (m Message) MediaObject() *Media {
	var md *Media
	switch m.Type {
	case "image":
		md = m.Image
	case "video":
		md = m.Video
	case "audio":
		md = m.Audio
	case "document":
		md = m.Document
	case "sticker":
		md = m.Sticker
	}
	if md == nil || md.ID == "" {
		return nil
	}
	return md
}

// Body returns the fields of m's message body; the caller may add to them
// before marshalling. Every string in it is valid UTF-8 without NUL.
func (m Message) Body() map[string]any {
	if m.Type == "text" && m.Text != nil {
		b := map[string]any{"text": clean(m.Text.Body)}
		m.addContext(b)
		return b
	}
	b := map[string]any{"type": clean(m.Type), "text": m.fallback()}
	var raw map[string]json.RawMessage
	if json.Unmarshal(m.Raw, &raw) == nil {
		if v, ok := raw[m.Type]; ok && m.Type != "text" && m.Type != "type" {
			b[clean(m.Type)] = cleanJSON(v)
		}
		if v, ok := raw["errors"]; ok {
			b["errors"] = cleanJSON(v)
		}
	}
	m.addContext(b)
	return b
}

func (m Message) addContext(b map[string]any) {
	if m.Context != nil && (m.Context.ID != "" || m.Context.Forwarded) {
		b["context"] = map[string]any{"id": clean(m.Context.ID), "from": clean(m.Context.From), "forwarded": m.Context.Forwarded}
	}
}

// fallback is the text shown by clients that render only text.
func (m Message) fallback() string {
	s := func(parts ...string) string {
		for _, p := range parts {
			if p = strings.TrimSpace(clean(p)); p != "" {
				return p
			}
		}
		return ""
	}
	or := func(v, placeholder string) string {
		if v == "" {
			return placeholder
		}
		return v
	}
	switch m.Type {
	case "text":
		return "" // a text type without its text object
	case "image", "video", "sticker":
		if md := m.media(); md != nil {
			return or(s(md.Caption), "["+m.Type+"]")
		}
	case "audio":
		if m.Audio != nil && m.Audio.Voice {
			return "[voice message]"
		}
		return "[audio]"
	case "document":
		if m.Document != nil {
			return or(s(m.Document.Caption, m.Document.Filename), "[document]")
		}
	case "location":
		if l := m.Location; l != nil {
			return or(s(l.Name, l.Address), fmt.Sprintf("[location %.6f, %.6f]", l.Latitude, l.Longitude))
		}
	case "contacts":
		names := make([]string, 0, len(m.Contacts))
		for _, c := range m.Contacts {
			if n := s(c.Name.FormattedName); n != "" {
				names = append(names, n)
			}
		}
		return "[contact: " + or(strings.Join(names, ", "), "unnamed") + "]"
	case "interactive":
		if i := m.Interactive; i != nil {
			for _, r := range []*Reply{i.ButtonReply, i.ListReply} {
				if r != nil {
					return or(s(r.Title, r.ID), "[reply]")
				}
			}
		}
	case "button":
		if m.Button != nil {
			return or(s(m.Button.Text, m.Button.Payload), "[button]")
		}
	case "reaction":
		if r := m.Reaction; r != nil {
			if e := s(r.Emoji); e != "" {
				return "[reaction " + e + "]"
			}
			return "[reaction removed]"
		}
	}
	return "[" + clip(m.Type) + " message]"
}

func (m Message) media() *Media {
	switch m.Type {
	case "image":
		return m.Image
	case "video":
		return m.Video
	case "sticker":
		return m.Sticker
	}
	return nil
}

// cleanJSON decodes v and cleans every string in it (keys too), so that the
// platform's object can be stored as is in any store.
func cleanJSON(v json.RawMessage) any {
	var x any
	if err := json.Unmarshal(v, &x); err != nil {
		return nil
	}
	return cleanValue(x)
}

func cleanValue(x any) any {
	switch t := x.(type) {
	case string:
		return clean(t)
	case []any:
		for i := range t {
			t[i] = cleanValue(t[i])
		}
		return t
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, v := range t {
			out[clean(k)] = cleanValue(v)
		}
		return out
	}
	return x
}
