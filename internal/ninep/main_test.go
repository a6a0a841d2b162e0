package ninep_test

import (
	"testing"

	"github.com/memohfs/memohfs/internal/testenv"
)

func TestMain(m *testing.M) {
	testenv.Main(m, testenv.Needs{Containerd: true, Postgres: true})
}
