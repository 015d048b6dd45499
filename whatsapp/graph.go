package whatsapp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// DefaultGraphURL is the Graph API base the client calls unless told
// otherwise: the real one, with the version the engine was written against.
const DefaultGraphURL = "https://graph.facebook.com/v21.0"

// Defaults of ClientOptions.
const (
	// DefaultMaxMediaBytes bounds a media download: WhatsApp's largest
	// media (documents) are 100 MiB.
	DefaultMaxMediaBytes = 100 << 20
	// maxAnswerBytes bounds a JSON answer of the Graph API (a few hundred
	// bytes when it works).
	maxAnswerBytes = 1 << 20
)

// ClientOptions configures a Client. The zero value of each field means its
// default.
type ClientOptions struct {
	// HTTPClient sends the requests. Default: one of its own with no
	// Timeout: each call's deadline is its context's.
	HTTPClient *http.Client
	// MaxMediaBytes bounds a media download (ErrMediaTooLarge past it).
	// Default DefaultMaxMediaBytes.
	MaxMediaBytes int64
}

// Client calls the Graph API with a bearer token. It is safe for concurrent
// use; it neither retries nor limits its rate (the whatsapp actor does).
type Client struct {
	base     string
	token    string
	http     *http.Client
	maxMedia int64
}

// NewClient returns a client of the Graph API at baseURL (with its version,
// e.g. DefaultGraphURL) authenticating with token. It reports every problem
// at once.
func NewClient(baseURL, token string, o ClientOptions) (*Client, error) {
	var errs []error
	if err := CheckGraphURL(baseURL); err != nil {
		errs = append(errs, err)
	}
	if token == "" {
		errs = append(errs, errors.New("token: required"))
	}
	if o.MaxMediaBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxMediaBytes: must not be negative, got %d", o.MaxMediaBytes))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("whatsapp: %w", err)
	}
	c := &Client{base: strings.TrimRight(baseURL, "/"), token: token, http: o.HTTPClient, maxMedia: o.MaxMediaBytes}
	if c.http == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 32
		c.http = &http.Client{Transport: t}
	}
	if c.maxMedia == 0 {
		c.maxMedia = DefaultMaxMediaBytes
	}
	return c, nil
}

// CheckGraphURL reports whether u can be a Graph API base URL.
func CheckGraphURL(u string) error {
	p, err := url.Parse(u)
	switch {
	case err != nil:
		return fmt.Errorf("graph url: %w", err)
	case p.Scheme != "http" && p.Scheme != "https":
		return fmt.Errorf("graph url %q: scheme must be http or https", u)
	case p.Host == "":
		return fmt.Errorf("graph url %q: host is missing", u)
	case p.RawQuery != "" || p.Fragment != "":
		return fmt.Errorf("graph url %q: must have no query or fragment", u)
	}
	return nil
}

// CloseIdleConnections closes the client's idle keep-alive connections.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// Send posts payload (the Cloud API message object, with
// "messaging_product":"whatsapp"; a json.RawMessage or anything
// encoding/json marshals) to {base}/{phoneNumberID}/messages and returns the
// message's wamid. A refusal of the Graph API is a *GraphError; anything
// else (no answer, a broken one) is a plain error, which a caller should
// treat as retryable but uncertain: the message may have gone out.
func (c *Client) Send(ctx context.Context, phoneNumberID string, payload any) (string, error) {
	var out struct {
		Messages []struct {
			ID string `json:"id"`
		} `json:"messages"`
	}
	if err := c.post(ctx, phoneNumberID, payload, &out); err != nil {
		return "", err
	}
	if len(out.Messages) == 0 || out.Messages[0].ID == "" {
		return "", errors.New("whatsapp: send: the answer has no message id")
	}
	return out.Messages[0].ID, nil
}

// MarkRead marks the customer's message wamid as read (blue ticks) and, when
// typing is true, shows the typing indicator to the customer (for up to 25
// seconds or until the next message).
func (c *Client) MarkRead(ctx context.Context, phoneNumberID, wamid string, typing bool) error {
	p := map[string]any{"messaging_product": "whatsapp", "status": "read", "message_id": wamid}
	if typing {
		p["typing_indicator"] = map[string]string{"type": "text"}
	}
	var out struct {
		Success bool `json:"success"`
	}
	if err := c.post(ctx, phoneNumberID, p, &out); err != nil {
		return err
	}
	if !out.Success {
		return errors.New("whatsapp: mark read: the answer is not a success")
	}
	return nil
}

func (c *Client) post(ctx context.Context, phoneNumberID string, payload any, out any) error {
	if !digits(phoneNumberID) {
		return fmt.Errorf("whatsapp: phone number id %q is not a number", clip(phoneNumberID))
	}
	body, ok := payload.(json.RawMessage)
	if !ok {
		var err error
		if body, err = json.Marshal(payload); err != nil {
			return fmt.Errorf("whatsapp: send: encode: %w", err)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/"+phoneNumberID+"/messages", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("whatsapp: send: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	return c.do(req, out)
}

// MediaInfo is what the Graph API says of a media id: where to download it
// (a short-lived URL that needs the bearer token too), its type and size.
type MediaInfo struct {
	ID       string `json:"id"`
	URL      string `json:"url"`
	MimeType string `json:"mime_type"`
	SHA256   string `json:"sha256"`
	FileSize int64  `json:"file_size"`
}

// ErrMediaTooLarge is returned by Download (and wrapped by Media) for media
// larger than ClientOptions.MaxMediaBytes or the caller's limit.
var ErrMediaTooLarge = errors.New("whatsapp: media too large")

// MediaInfo looks up media id mediaID.
func (c *Client) MediaInfo(ctx context.Context, mediaID string) (MediaInfo, error) {
	if mediaID == "" || strings.ContainsAny(mediaID, "/?#") {
		return MediaInfo{}, fmt.Errorf("whatsapp: media id %q is not valid", clip(mediaID))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/"+url.PathEscape(mediaID), nil)
	if err != nil {
		return MediaInfo{}, fmt.Errorf("whatsapp: media: %w", err)
	}
	var mi MediaInfo
	if err := c.do(req, &mi); err != nil {
		return MediaInfo{}, err
	}
	if mi.URL == "" {
		return MediaInfo{}, fmt.Errorf("whatsapp: media %s: the answer has no url", clip(mediaID))
	}
	return mi, nil
}

// Download fetches the bytes of mi with the bearer token, refusing
// (ErrMediaTooLarge) anything over limit bytes — the declared size before a
// byte is read, the actual size while reading. limit 0 means the client's
// MaxMediaBytes; a larger limit is capped by it.
func (c *Client) Download(ctx context.Context, mi MediaInfo, limit int64) ([]byte, error) {
	if limit <= 0 || limit > c.maxMedia {
		limit = c.maxMedia
	}
	if mi.FileSize > limit {
		return nil, fmt.Errorf("%w: %d bytes declared, the limit is %d", ErrMediaTooLarge, mi.FileSize, limit)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, mi.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("whatsapp: download: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("whatsapp: download: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, graphError(resp)
	}
	if resp.ContentLength > limit {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrMediaTooLarge, resp.ContentLength, limit)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("whatsapp: download: %w", err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrMediaTooLarge, limit)
	}
	return data, nil
}

// Media looks mediaID up and downloads it (see Download for limit).
func (c *Client) Media(ctx context.Context, mediaID string, limit int64) (MediaInfo, []byte, error) {
	mi, err := c.MediaInfo(ctx, mediaID)
	if err != nil {
		return MediaInfo{}, nil, err
	}
	data, err := c.Download(ctx, mi, limit)
	return mi, data, err
}

// do sends req with the bearer token and decodes a 2xx JSON answer into out.
func (c *Client) do(req *http.Request, out any) error {
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("whatsapp: %s %s: %w", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return graphError(resp)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAnswerBytes)).Decode(out); err != nil {
		return fmt.Errorf("whatsapp: %s %s: decode answer: %w", req.Method, req.URL.Path, err)
	}
	return nil
}
