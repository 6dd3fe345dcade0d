package ops

import (
	"context"
	"time"
)

func ctxT() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), time.Minute)
}
