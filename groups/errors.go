package groups

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/jetchat/jetchat/internal/chat"
)

// ruleError is a refusal the caller caused. Its text is written for the
// client; it unwraps to the chat error that decides the wire code.
type ruleError struct {
	msg  string
	kind error
}

func (e *ruleError) Error() string { return e.msg }
func (e *ruleError) Unwrap() error { return e.kind }

// Errors of this package. Each wraps an error of package chat, so callers may
// test either with errors.Is. Refusals are wrapped with details (which user,
// which limit) whose text is meant for the client.
var (
	// ErrNoGroup: the group does not exist, or the caller is not one of its
	// members (chat.ErrNotFound).
	ErrNoGroup error = &ruleError{"no such group", chat.ErrNotFound}
	// ErrNotMember: the user to remove is not a member of the group
	// (chat.ErrNotFound).
	ErrNotMember error = &ruleError{"no such member in this group", chat.ErrNotFound}
	// ErrNotAdmin: only an admin of the group may add members or remove
	// others (chat.ErrForbidden).
	ErrNotAdmin error = &ruleError{"only an admin of the group may add or remove other members", chat.ErrForbidden}
	// ErrTooMany: the group would have more than Config.MaxMembers members
	// (chat.ErrTooLarge).
	ErrTooMany error = &ruleError{"too many members", chat.ErrTooLarge}
	// ErrBadName: the group name is empty, too long or not text
	// (chat.ErrBadRequest).
	ErrBadName error = &ruleError{"invalid group name", chat.ErrBadRequest}
	// ErrBadUsers: a user list is empty where users are needed, or holds an
	// invalid user id or the same user twice (chat.ErrBadRequest).
	ErrBadUsers error = &ruleError{"invalid user list", chat.ErrBadRequest}
	// ErrUnavailable: Postgres or the message log did not answer
	// (chat.ErrUnavailable). Nothing was changed, unless the log append
	// succeeded and Postgres then failed, which leaves an orphan record in the
	// log and no change.
	ErrUnavailable error = &ruleError{"group store unavailable", chat.ErrUnavailable}
)

// storeErr wraps an error of a Postgres call made for op. Refusals pass
// through unchanged; a failure to reach Postgres wraps ErrUnavailable; an
// error reported by Postgres for a statement is a bug and stays internal.
func storeErr(op string, err error) error {
	var re *ruleError
	if errors.As(err, &re) {
		return err
	}
	if unreachable(err) {
		return fmt.Errorf("groups: %s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("groups: %s: %w", op, err)
}

// unreachable reports whether err means that Postgres could not be reached
// or could not serve now, as opposed to rejecting a statement.
func unreachable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		c := pgErr.Code
		return strings.HasPrefix(c, "08") || // connection exception
			strings.HasPrefix(c, "53") || // insufficient resources
			strings.HasPrefix(c, "57P") || // shutting down, cannot connect now
			c == "57014" || // statement cancelled (statement_timeout)
			c == "40001" || c == "40P01" || // serialization failure, deadlock
			c == "55P03" || // lock not available
			// The schema is not there yet: serve applies the migrations in
			// the background, retrying while Postgres is down, and serves
			// 1:1 messaging meanwhile.
			c == "42P01" // undefined table
	}
	var netErr net.Error
	var connErr *pgconn.ConnectError
	switch {
	case errors.As(err, &netErr), errors.As(err, &connErr),
		errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		pgconn.Timeout(err), pgconn.SafeToRetry(err):
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "closed pool") || strings.Contains(msg, "conn closed")
}
