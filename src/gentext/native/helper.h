// The compiled kernels' second core (a small step's int8 products: products.h, direct.h).
#pragma once

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>

#if defined(_WIN32)
#include <process.h>
static inline int current_pid() { return _getpid(); }
#else
#include <unistd.h>
static inline int current_pid() { return static_cast<int>(getpid()); }
#endif

// What a spinning thread does between looks: the CPU's pause hint where there is one.
static inline void cpu_pause() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#else
  std::this_thread::yield();
#endif
}

// A second core for a lone row's products. A one-row int8 product reads its whole weight matrix for
// one row of output, and fbgemm splits work by rows, so one stream's step used one core while the
// other idled; two halves of the outputs read at once take about half as long (RESULTS.md). The
// helper thread spins briefly after each task, then sleeps; a task it has not taken when the caller
// finishes its own half the caller runs itself, so a helper the OS has descheduled costs nothing.
class Helper {
 public:
  // Never destroyed: its thread lives as long as the process. A forked child has the object but
  // not the thread (and maybe a mutex a vanished thread held), so it makes a helper of its own.
  static Helper& get() {
    static std::atomic<Helper*> helper{nullptr};
    Helper* current = helper.load(std::memory_order_acquire);
    if (current == nullptr || current->pid_ != current_pid()) {
      static std::mutex making;
      std::lock_guard<std::mutex> lock(making);
      current = helper.load();
      if (current == nullptr || current->pid_ != current_pid()) {
        current = new Helper();
        helper.store(current, std::memory_order_release);
      }
    }
    return *current;
  }

  // Runs `mine` here and `theirs` on the helper (or here, after `mine`, if it is not taken in time
  // or another thread is using the helper); rethrows what `theirs` threw.
  template <class A, class B>
  void both(A&& mine, B&& theirs) {
    splits.fetch_add(1, std::memory_order_relaxed);
    bool expected = false;
    if (!busy_.compare_exchange_strong(expected, true)) {
      mine();
      theirs();
      return;
    }
    struct Release {
      std::atomic<bool>& flag;
      ~Release() { flag.store(false); }
    } release{busy_};
    task_ = [](void* f) { (*static_cast<std::remove_reference_t<B>*>(f))(); };
    context_ = &theirs;
    error_ = nullptr;
    state_.store(POSTED);
    if (sleeping_.load()) {
      std::lock_guard<std::mutex> lock(mutex_);
      wake_.notify_one();
    }
    try {
      mine();
    } catch (...) {
      settle();  // `theirs` may be reading this frame's tensors: never leave while it runs
      throw;
    }
    if (settle()) return theirs();  // not taken: done here
    if (error_) std::rethrow_exception(error_);
  }

  std::atomic<int64_t> splits{0};  // products split so far, wherever their halves ran (the tests read it)

 private:
  enum { IDLE, POSTED, TAKEN, DONE };
  static constexpr int SPINS = 20000;  // some tens of microseconds: the gap between a token's products
  std::atomic<int> state_{IDLE};
  std::atomic<bool> busy_{false}, sleeping_{false};
  void (*task_)(void*) = nullptr;
  void* context_ = nullptr;
  std::exception_ptr error_;
  std::mutex mutex_;
  std::condition_variable wake_;
  const int pid_ = current_pid();

  Helper() { std::thread([this] { loop(); }).detach(); }

  // Takes the posted task back if the helper has not started it (true), else waits for it to end.
  bool settle() {
    int posted = POSTED;
    if (state_.compare_exchange_strong(posted, IDLE)) return true;
    while (state_.load(std::memory_order_acquire) != DONE) cpu_pause();
    state_.store(IDLE);
    return false;
  }

  void loop() {
    at::set_num_threads(1);  // its product is already half of one: no OpenMP team of its own
    c10::InferenceMode inference;
    for (;;) {
      wait_for_task();
      int posted = POSTED;
      if (!state_.compare_exchange_strong(posted, TAKEN)) continue;  // the caller ran it itself
      try {
        task_(context_);
      } catch (...) {
        error_ = std::current_exception();
      }
      state_.store(DONE, std::memory_order_release);
    }
  }

  void wait_for_task() {
    for (int i = 0; i < SPINS; ++i) {
      if (state_.load(std::memory_order_acquire) == POSTED) return;
      cpu_pause();
    }
    std::unique_lock<std::mutex> lock(mutex_);
    sleeping_.store(true);
    wake_.wait(lock, [this] { return state_.load() == POSTED; });
    sleeping_.store(false);
  }
};
