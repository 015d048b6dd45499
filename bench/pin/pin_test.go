package pin

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseCPUs(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string // "" = error
	}{
		{"0", "[0]"}, {"1", "[1]"}, {"0-3", "[0 1 2 3]"}, {"3,0-1,1", "[0 1 3]"}, {" 2 , 0 ", "[0 2]"},
		{"", ""}, {"a", ""}, {"-1", ""}, {"3-1", ""}, {"0,", ""}, {"99999", ""},
	} {
		got, err := ParseCPUs(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("ParseCPUs(%q) = %v, want an error", tc.in, got)
		case tc.want != "" && (err != nil || fmt.Sprint(got) != tc.want):
			t.Errorf("ParseCPUs(%q) = %v, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestCommand(t *testing.T) {
	if _, err := exec.LookPath("taskset"); err != nil {
		t.Skip("no taskset here")
	}
	for _, tc := range []struct {
		cmd  string
		cpus []int
		want string
	}{
		{"./bin/charla serve --addr x", []int{0}, "GOMAXPROCS=1 taskset -c 0 ./bin/charla serve --addr x"},
		{"FOO=1 ./bin/charla serve", []int{0, 2}, "FOO=1 GOMAXPROCS=2 taskset -c 0,2 ./bin/charla serve"},
		{"GOMAXPROCS=4 charla", []int{1}, "GOMAXPROCS=4 taskset -c 1 charla"},
		{"./x --flag=a=b", []int{0}, "GOMAXPROCS=1 taskset -c 0 ./x --flag=a=b"},
	} {
		got, err := Command(tc.cmd, tc.cpus)
		if err != nil || got != tc.want {
			t.Errorf("Command(%q, %v) = %q, %v; want %q", tc.cmd, tc.cpus, got, err, tc.want)
		}
	}
	// The pinned command really runs where it is told, with GOMAXPROCS set.
	last := runtime.NumCPU() - 1
	line, err := Command(`sh -c 'echo $GOMAXPROCS; grep Cpus_allowed_list /proc/self/status'`, []int{last})
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("/bin/sh", "-c", line).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
	if want := fmt.Sprintf("1\nCpus_allowed_list:\t%d\n", last); string(out) != want {
		t.Errorf("pinned command printed %q, want %q", out, want)
	}
}

// TestSelf runs in a child process, since pinning is for the whole process.
func TestSelf(t *testing.T) {
	if os.Getenv("PIN_TEST_CHILD") == "1" {
		last := runtime.NumCPU() - 1
		if err := Self([]int{last}); err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		done := make(chan struct{})
		go func() { // a thread started after pinning inherits it
			runtime.LockOSThread()
			var set unix.CPUSet
			if err := unix.SchedGetaffinity(0, &set); err != nil || set.Count() != 1 || !set.IsSet(last) {
				fmt.Println("new thread not pinned")
				os.Exit(1)
			}
			close(done)
		}()
		<-done
		tasks, _ := os.ReadDir("/proc/self/task")
		for _, task := range tasks {
			tid, _ := strconv.Atoi(task.Name())
			var set unix.CPUSet
			if err := unix.SchedGetaffinity(tid, &set); err == nil && (set.Count() != 1 || !set.IsSet(last)) {
				fmt.Println("thread", tid, "not pinned")
				os.Exit(1)
			}
		}
		fmt.Printf("ok GOMAXPROCS=%d\n", runtime.GOMAXPROCS(0))
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSelf$")
	cmd.Env = append(os.Environ(), "PIN_TEST_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok GOMAXPROCS=1") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
