package main

import (
	"context"
	"flag"
)

func demoFlags(fs *flag.FlagSet) func(ctx context.Context, a *app, args []string) error {
	return func(ctx context.Context, a *app, args []string) error {
		return usagef("demo: not yet")
	}
}
