package pgbus

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrLeaseExpired is what Ack and Nack return when the message's lease had
// run out (or was taken over): it may be delivered again.
var ErrLeaseExpired = errors.New("pgbus: the lease had expired; the message may be delivered again")

// DataLossError reports bytes that do not match their SHA-256. They are
// never returned as data. status.Code(err) is codes.DataLoss, as for the
// server's own checks.
type DataLossError struct {
	MessageID string
	Detail    string
}

func (e *DataLossError) Error() string {
	return fmt.Sprintf("pgbus: data loss: message %s: %s", e.MessageID, e.Detail)
}

// GRPCStatus makes status.Code and status.Convert see codes.DataLoss.
func (e *DataLossError) GRPCStatus() *status.Status {
	return status.New(codes.DataLoss, e.Error())
}

// Retryable reports whether the same call may succeed later: UNAVAILABLE
// (a replica restarting, a lost connection) and DEADLINE_EXCEEDED. Every
// other status says what to fix.
func Retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return false
}

// permanent are the codes a new Subscribe stream would meet again.
func permanent(err error) bool {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.NotFound, codes.PermissionDenied, codes.Unauthenticated,
		codes.FailedPrecondition, codes.Unimplemented:
		return true
	}
	return false
}

// ctxErr prefers the context's own error once it is done.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
