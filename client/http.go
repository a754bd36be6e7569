package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// API is a client of jetchat's HTTP API.
type API struct {
	// BaseURL is the node's address, like http://127.0.0.1:8080.
	BaseURL string
	// Token is the access token sent as a bearer token.
	Token string
	// HTTP is the client used; nil means http.DefaultClient.
	HTTP *http.Client
}

// RecipientStatus and MessageStatus are the answer of Status.
type RecipientStatus struct {
	User   string `json:"user"`
	Status string `json:"status"`
	TS     int64  `json:"ts"`
}

// MessageStatus is a message's status per recipient.
type MessageStatus struct {
	ID         string            `json:"id"`
	Status     string            `json:"status"`
	Recipients []RecipientStatus `json:"recipients"`
}

// Route names the gateway that serves a user.
type Route struct {
	Gateway string `json:"gateway"`
	URL     string `json:"url"`
}

// Do sends a request with a JSON body (nil for none) and decodes a JSON
// answer into out (nil to discard). An error answer returns an *Error.
func (a *API) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("jetchat: %s %s: encode the body: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(a.BaseURL, "/")+path, rd)
	if err != nil {
		return fmt.Errorf("jetchat: %s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return a.DoRequest(req, out)
}

// DoRequest sends req with the token and decodes the answer like Do.
func (a *API) DoRequest(req *http.Request, out any) error {
	if a.Token != "" {
		req.Header.Set("Authorization", "Bearer "+a.Token)
	}
	hc := a.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("jetchat: %s %s: %w", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		var eb struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil || eb.Error.Code == "" {
			return &Error{Status: resp.StatusCode, Code: "http", Message: resp.Status}
		}
		return &Error{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
	}
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("jetchat: decode %s answer: %w", req.URL.Path, err)
	}
	return nil
}

// History returns a page of the conversation with user with (or of group,
// when with is empty), newest first. before and limit are optional.
func (a *API) History(ctx context.Context, with, group, before string, limit int) ([]Message, error) {
	q := url.Values{}
	if with != "" {
		q.Set("with", with)
	}
	if group != "" {
		q.Set("group", group)
	}
	if before != "" {
		q.Set("before", before)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var out struct {
		Messages []Message `json:"messages"`
	}
	err := a.Do(ctx, http.MethodGet, "/v1/messages?"+q.Encode(), nil, &out)
	return out.Messages, err
}

// Status returns a message's status per recipient (for its sender).
func (a *API) Status(ctx context.Context, id string) (*MessageStatus, error) {
	var out MessageStatus
	if err := a.Do(ctx, http.MethodGet, "/v1/messages/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Route asks which gateway serves the caller.
func (a *API) Route(ctx context.Context) (Route, error) {
	var out Route
	err := a.Do(ctx, http.MethodGet, "/v1/route", nil, &out)
	return out, err
}
