package client

import (
	"context"
	"errors"
	"net/http"
)

// CloseMoved is the close code of a session whose user another gateway owns
// now: ask GET /v1/route again and reconnect there (DialRoute does).
const CloseMoved = 4002

// maxMisdirected bounds how many 421 answers DialRoute follows: gateways
// may disagree for a moment while a gateway joins or leaves.
const maxMisdirected = 3

// DialRoute connects to the gateway that owns the caller: it asks base (the
// HTTP address of any gateway, like http://10.0.0.1:8080) GET /v1/route,
// dials the WebSocket URL of the answer, and follows a 421 (wrong_gateway)
// answer naming another owner, a few times at most. It returns Dial's
// errors, or the route request's.
func DialRoute(ctx context.Context, base, token string) (*Conn, error) {
	return DialRouteWith(ctx, base, token, Options{})
}

// DialRouteWith is DialRoute with the session's options.
func DialRouteWith(ctx context.Context, base, token string, o Options) (*Conn, error) {
	api := &API{BaseURL: base, Token: token}
	rt, err := api.Route(ctx)
	if err != nil {
		return nil, err
	}
	url := rt.URL
	for i := 0; ; i++ {
		c, err := DialWith(ctx, url, token, o)
		var e *Error
		if err == nil || i == maxMisdirected || !errors.As(err, &e) || e.Status != http.StatusMisdirectedRequest || e.URL == "" {
			return c, err
		}
		url = e.URL
	}
}
