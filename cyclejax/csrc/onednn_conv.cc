// 2-D convolutions (forward, backward-data, backward-weights) as XLA FFI handlers that
// run oneDNN's CPU primitives, the kernels torch's CPU convolutions use.
//
// JAX hands over dense row-major arrays: activations NHWC, kernels HWIO. Each primitive is
// created with the layouts it runs fastest in (`format_tag::any`, as torch's mkldnn path
// does), and every operand whose layout differs is reordered in a temporary on each call
// (activations where `Blocked` says; kernels unless they come packed). Primitives and
// reorders are built once per shape and kept; each call brings its own scratchpad and
// temporaries, so concurrent calls from XLA's threads share nothing but the immutable plans
// (large calls still run one at a time: see SerialMflop).
//
// A kernel can be packed once into the layout a forward or backward-data primitive wants
// (`CyclejaxConvPack`) and handed to it packed: a generator applied three times in a step
// then reorders each kernel once per step and direction, not at every call (the reorders
// were an eighth of oneDNN's time in the 128x128 step, and torch does them at every call).
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

enum Kind : int64_t { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

// kind, operand dtype (0 f32, 1 bf16), n, c, h, w, o, kh, kw, oh, ow, stride, pad_top, pad_left.
// Results are float32 whatever the operands (oneDNN accumulates in float32): a bfloat16
// network's normalisations then read float32 directly, as torch.autocast's do.
using Key = std::array<int64_t, 14>;

// Whether a primitive takes the activations in its own (blocked) layout rather than NHWC,
// with reorders around it. On the 2-core AMD EPYC the float32 NHWC backward-weights kernels
// of strided convolutions ran 1.3x (128 -> 256 channels) to 2.6x (64 -> 128) slower than the
// blocked ones; for stride 1, for the other kinds and in bfloat16 NHWC was as fast or
// faster. CYCLEJAX_ONEDNN_BLOCKED (a bit per kind: always blocked) overrides this for
// measurements.
bool Blocked(Kind kind, bool bf16, int64_t stride) {
  static const int forced = [] {
    const char* env = std::getenv("CYCLEJAX_ONEDNN_BLOCKED");
    return env ? std::atoi(env) : -1;
  }();
  if (forced >= 0) return (forced >> kind) & 1;
  return kind == kBackwardWeights && !bf16 && stride > 1;
}

// One operand: where it is in the call (the buffers a, b, out), its oneDNN argument, its
// layout as JAX holds it and as the primitive wants it, and the reorder between the two.
struct Slot {
  int buffer;  // 0: first argument, 1: second argument, 2: result
  int arg;
  dnnl::memory::desc user, wanted;
  dnnl::primitive reorder;  // user -> wanted for inputs, wanted -> user for the result
  bool reordered = false;
  // A bfloat16 primitive's kernel: float32 HWIO -> wanted, rounding (CyclejaxConvPack).
  dnnl::memory::desc user_f32;
  dnnl::primitive from_f32;
};

struct Plan {
  dnnl::primitive conv;
  std::array<Slot, 3> slots;
  dnnl::memory::desc scratchpad;
};

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

std::unique_ptr<Plan> MakePlan(const Key& k) {
  const auto kind = static_cast<Kind>(k[0]);
  const auto dt = k[1] == 0 ? dnnl::memory::data_type::f32 : dnnl::memory::data_type::bf16;
  const auto f32 = dnnl::memory::data_type::f32;
  const int64_t n = k[2], c = k[3], h = k[4], w = k[5], o = k[6], kh = k[7], kw = k[8], oh = k[9],
                ow = k[10], s = k[11], pt = k[12], pl = k[13];
  // Torch's (and XLA's) floor: the bottom/right padding that yields exactly (oh, ow).
  const int64_t pb = (oh - 1) * s + kh - h - pt, pr = (ow - 1) * s + kw - w - pl;
  using tag = dnnl::memory::format_tag;
  const tag act = Blocked(kind, k[1] == 1, s) ? tag::any : tag::nhwc;
  // Operands in `dt`; the result (y, dx or dw by kind) in float32.
  const auto x_dt = kind == kBackwardData ? f32 : dt, y_dt = kind == kForward ? f32 : dt,
             w_dt = kind == kBackwardWeights ? f32 : dt;
  const dnnl::memory::desc x_user({n, c, h, w}, x_dt, tag::nhwc), y_user({n, o, oh, ow}, y_dt, tag::nhwc),
      w_user({o, c, kh, kw}, w_dt, tag::hwio);
  const dnnl::memory::desc x_any({n, c, h, w}, x_dt, act), y_any({n, o, oh, ow}, y_dt, act),
      w_any({o, c, kh, kw}, w_dt, tag::any);
  // The forward primitive that backward ones take as a hint has operands and result in `dt`.
  const dnnl::memory::desc x_hint({n, c, h, w}, dt, act), y_hint({n, o, oh, ow}, dt, act),
      w_hint({o, c, kh, kw}, dt, tag::any);
  const dnnl::memory::dims strides{s, s}, pad_l{pt, pl}, pad_r{pb, pr};
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  auto& eng = Engine();
  dnnl::convolution_forward::primitive_desc fwd(
      eng, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, kind == kForward ? x_any : x_hint,
      kind == kForward ? w_any : w_hint, kind == kForward ? y_any : y_hint, strides, pad_l, pad_r, attr);
  auto plan = std::make_unique<Plan>();
  if (kind == kForward) {
    plan->conv = dnnl::convolution_forward(fwd);
    plan->slots = {Slot{0, DNNL_ARG_SRC, x_user, fwd.src_desc()}, Slot{1, DNNL_ARG_WEIGHTS, w_user, fwd.weights_desc()},
                   Slot{2, DNNL_ARG_DST, y_user, fwd.dst_desc()}};
    plan->scratchpad = fwd.scratchpad_desc();
  } else if (kind == kBackwardData) {
    dnnl::convolution_backward_data::primitive_desc bwd(eng, dnnl::algorithm::convolution_direct, x_any, w_any,
                                                        y_any, strides, pad_l, pad_r, fwd, attr);
    plan->conv = dnnl::convolution_backward_data(bwd);
    plan->slots = {Slot{0, DNNL_ARG_DIFF_DST, y_user, bwd.diff_dst_desc()},
                   Slot{1, DNNL_ARG_WEIGHTS, w_user, bwd.weights_desc()},
                   Slot{2, DNNL_ARG_DIFF_SRC, x_user, bwd.diff_src_desc()}};
    plan->scratchpad = bwd.scratchpad_desc();
  } else {
    dnnl::convolution_backward_weights::primitive_desc bwd(eng, dnnl::algorithm::convolution_direct, x_any,
                                                           w_any, y_any, strides, pad_l, pad_r, fwd, attr);
    plan->conv = dnnl::convolution_backward_weights(bwd);
    plan->slots = {Slot{0, DNNL_ARG_SRC, x_user, bwd.src_desc()}, Slot{1, DNNL_ARG_DIFF_DST, y_user, bwd.diff_dst_desc()},
                   Slot{2, DNNL_ARG_DIFF_WEIGHTS, w_user, bwd.diff_weights_desc()}};
    plan->scratchpad = bwd.scratchpad_desc();
  }
  for (Slot& slot : plan->slots) {
    slot.reordered = slot.wanted != slot.user;
    if (slot.buffer == 1 && kind != kBackwardWeights && dt != f32) {
      slot.user_f32 = dnnl::memory::desc({o, c, kh, kw}, f32, tag::hwio);
      slot.from_f32 = dnnl::reorder(dnnl::reorder::primitive_desc(eng, slot.user_f32, eng, slot.wanted));
    }
    if (!slot.reordered) continue;
    slot.reorder = slot.buffer == 2 ? dnnl::reorder(dnnl::reorder::primitive_desc(eng, slot.wanted, eng, slot.user))
                                    : dnnl::reorder(dnnl::reorder::primitive_desc(eng, slot.user, eng, slot.wanted));
  }
  return plan;
}

const Plan& GetPlan(const Key& key) {
  static std::mutex mu;
  static std::map<Key, std::unique_ptr<Plan>> plans;
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = plans[key];
  if (!slot) slot = MakePlan(key);
  return *slot;
}

Key MakeKey(Kind kind, ffi::DataType type, const int64_t* x_nhwc, const int64_t* hwio, const int64_t* y_nhwc,
            int64_t stride, int64_t pad_top, int64_t pad_left) {
  return Key{kind, type == ffi::DataType::F32 ? 0 : 1, x_nhwc[0], x_nhwc[3], x_nhwc[1], x_nhwc[2], hwio[3],
             hwio[0], hwio[1], y_nhwc[1], y_nhwc[2], stride, pad_top, pad_left};
}

// One convolution at a time, for all but the smallest. XLA:CPU runs independent thunks
// concurrently, and each oneDNN call brings an OpenMP team as wide as the machine: two
// calls at once put two teams on the same cores, and each team's barriers then wait for
// threads the other one holds. On the 2-core AMD EPYC a process-wide lock made the 128x128
// bfloat16 step 1.11-1.24 s -> 0.84-0.92 s (float32 and 256x256: the same or faster); for
// the 64x64 quick-start model, whose convolutions are all below 20 MFLOP, locking them cost
// 5-10 %. CYCLEJAX_ONEDNN_SERIAL_MFLOP overrides the limit for measurements (negative:
// never lock).
double SerialMflop() {
  static const double limit = [] {
    const char* env = std::getenv("CYCLEJAX_ONEDNN_SERIAL_MFLOP");
    return env ? std::atof(env) : 20.0;
  }();
  return limit;
}

double Mflop(const Key& k) {  // 2 * n * o * oh * ow * c * kh * kw
  return 2.0 * k[2] * k[6] * k[9] * k[10] * k[3] * k[7] * k[8] / 1e6;
}

std::mutex& SerialMutex() {
  static std::mutex mu;
  return mu;
}

// Calls inside the handler now and the most seen at once (CyclejaxConvPeakConcurrency).
std::atomic<int> in_flight{0}, peak_in_flight{0};

struct InFlight {
  InFlight() {
    const int now = ++in_flight;
    int peak = peak_in_flight.load();
    while (now > peak && !peak_in_flight.compare_exchange_weak(peak, now)) {
    }
  }
  ~InFlight() { --in_flight; }
};

// 64-byte aligned memory for one call.
struct Buffer {
  explicit Buffer(size_t bytes) : ptr(bytes ? std::aligned_alloc(64, (bytes + 63) / 64 * 64) : nullptr) {}
  ~Buffer() { std::free(ptr); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  void* ptr;
};

ffi::Error Run(Kind kind, ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::AnyBuffer out, int64_t stride, int64_t pad_top,
               int64_t pad_left, ffi::Span<const int64_t> kernel, bool packed) {
  // forward (x, w) -> y; backward-data (dy, w) -> dx; backward-weights (x, dy) -> dw. With
  // `packed`, w is in the primitive's own layout (from CyclejaxConvPack) and `kernel` gives
  // its HWIO shape.
  const auto type = a.element_type();
  if ((type != ffi::DataType::F32 && type != ffi::DataType::BF16) || out.element_type() != ffi::DataType::F32) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "cyclejax onednn conv: float32 or bfloat16 operands and a float32 result only");
  }
  ffi::AnyBuffer x = kind == kBackwardData ? out : a;
  ffi::AnyBuffer wb = kind == kBackwardWeights ? out : b;
  ffi::AnyBuffer y = kind == kForward ? out : (kind == kBackwardData ? a : b);
  auto xd = x.dimensions(), yd = y.dimensions();
  const bool packed_ok = kind != kBackwardWeights && kernel.size() == 4;
  if (packed && !packed_ok) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "cyclejax onednn conv: a packed kernel needs its HWIO shape");
  }
  const int64_t* wd = packed ? kernel.begin() : wb.dimensions().begin();
  if (xd.size() != 4 || (!packed && wb.dimensions().size() != 4) || yd.size() != 4 || b.element_type() != type ||
      wd[2] != xd[3] || yd[3] != wd[3] || yd[0] != xd[0] || stride < 1) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "cyclejax onednn conv: expects NHWC activations and an HWIO kernel of one dtype");
  }
  // The bottom/right padding that yields exactly the output size must lie in [0, pad].
  const int64_t pad_bottom = (yd[1] - 1) * stride + wd[0] - xd[1] - pad_top;
  const int64_t pad_right = (yd[2] - 1) * stride + wd[1] - xd[2] - pad_left;
  if (pad_bottom < 0 || pad_right < 0 || pad_bottom > pad_top || pad_right > pad_left) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument,
                      "cyclejax onednn conv: output size does not match input size, kernel, stride and padding");
  }
  const Key key = MakeKey(kind, type, xd.begin(), wd, yd.begin(), stride, pad_top, pad_left);
  std::unique_lock<std::mutex> serial(SerialMutex(), std::defer_lock);
  const double limit = SerialMflop();
  if (limit >= 0 && Mflop(key) >= limit) serial.lock();
  InFlight counted;
  try {
    const Plan& plan = GetPlan(key);
    if (packed && static_cast<size_t>(wb.size_bytes()) != plan.slots[1].wanted.get_size()) {
      return ffi::Error(ffi::ErrorCode::kInvalidArgument, "cyclejax onednn conv: the packed kernel's size does not "
                                                          "match this convolution");
    }
    auto& eng = Engine();
    thread_local dnnl::stream stream(eng);
    void* data[3] = {a.untyped_data(), b.untyped_data(), out.untyped_data()};
    std::vector<std::unique_ptr<Buffer>> temporaries;
    std::unordered_map<int, dnnl::memory> args;
    const Slot* result = nullptr;
    dnnl::memory user_result, wanted_result;
    for (const Slot& slot : plan.slots) {
      if (packed && slot.buffer == 1) {
        args.emplace(slot.arg, dnnl::memory(slot.wanted, eng, data[1]));
        continue;
      }
      dnnl::memory user(slot.user, eng, data[slot.buffer]);
      if (!slot.reordered) {
        args.emplace(slot.arg, user);
        continue;
      }
      temporaries.push_back(std::make_unique<Buffer>(slot.wanted.get_size()));
      dnnl::memory wanted(slot.wanted, eng, temporaries.back()->ptr);
      if (slot.buffer == 2) {
        result = &slot;
        user_result = user;
        wanted_result = wanted;
      } else {
        slot.reorder.execute(stream, {{DNNL_ARG_FROM, user}, {DNNL_ARG_TO, wanted}});
      }
      args.emplace(slot.arg, wanted);
    }
    Buffer scratch(plan.scratchpad.get_size());
    args.emplace(DNNL_ARG_SCRATCHPAD, dnnl::memory(plan.scratchpad, eng, scratch.ptr));
    plan.conv.execute(stream, args);
    if (result != nullptr) {
      result->reorder.execute(stream, {{DNNL_ARG_FROM, wanted_result}, {DNNL_ARG_TO, user_result}});
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("cyclejax onednn conv: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> y, int64_t stride,
                   int64_t pad_top, int64_t pad_left, ffi::Span<const int64_t> kernel, int64_t packed) {
  return Run(kForward, x, w, *y, stride, pad_top, pad_left, kernel, packed != 0);
}
ffi::Error BackwardData(ffi::AnyBuffer dy, ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> dx, int64_t stride,
                        int64_t pad_top, int64_t pad_left, ffi::Span<const int64_t> kernel, int64_t packed) {
  return Run(kBackwardData, dy, w, *dx, stride, pad_top, pad_left, kernel, packed != 0);
}
ffi::Error BackwardWeights(ffi::AnyBuffer x, ffi::AnyBuffer dy, ffi::Result<ffi::AnyBuffer> dw,
                           int64_t stride, int64_t pad_top, int64_t pad_left, ffi::Span<const int64_t> kernel,
                           int64_t packed) {
  return Run(kBackwardWeights, x, dy, *dw, stride, pad_top, pad_left, kernel, packed != 0);
}

// The layout a forward (kind 0) or backward-data (kind 1) primitive wants its kernel in, for
// the convolution with activations `x_nhwc` -> `y_nhwc` (for backward-data: dx <- dy).
const Slot& KernelSlot(int64_t kind, ffi::DataType type, const int64_t* x_nhwc, const int64_t* hwio,
                       const int64_t* y_nhwc, int64_t stride, int64_t pad_top, int64_t pad_left) {
  return GetPlan(MakeKey(static_cast<Kind>(kind), type, x_nhwc, hwio, y_nhwc, stride, pad_top, pad_left)).slots[1];
}

ffi::Error Pack(ffi::AnyBuffer w, ffi::Result<ffi::AnyBuffer> packed, int64_t kind, int64_t stride, int64_t pad_top,
                int64_t pad_left, ffi::Span<const int64_t> x_nhwc, ffi::Span<const int64_t> y_nhwc) {
  // The packed kernel is in the primitive's operand dtype; a float32 kernel packed for a
  // bfloat16 primitive is rounded on the way (its gradient then stays float32).
  const auto wd = w.dimensions();
  const auto type = packed->element_type();
  const bool rounds = w.element_type() == ffi::DataType::F32 && type == ffi::DataType::BF16;
  if ((kind != kForward && kind != kBackwardData) || wd.size() != 4 || x_nhwc.size() != 4 || y_nhwc.size() != 4 ||
      (w.element_type() != type && !rounds)) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "cyclejax onednn pack: bad kind, shapes or dtypes");
  }
  try {
    const Slot& slot = KernelSlot(kind, type, x_nhwc.begin(), wd.begin(), y_nhwc.begin(), stride, pad_top, pad_left);
    if (static_cast<size_t>(packed->size_bytes()) != slot.wanted.get_size()) {
      return ffi::Error(ffi::ErrorCode::kInvalidArgument, "cyclejax onednn pack: result size mismatch");
    }
    auto& eng = Engine();
    thread_local dnnl::stream stream(eng);
    dnnl::memory wanted(slot.wanted, eng, packed->untyped_data());
    if (rounds) {
      dnnl::memory user(slot.user_f32, eng, w.untyped_data());
      slot.from_f32.execute(stream, {{DNNL_ARG_FROM, user}, {DNNL_ARG_TO, wanted}});
      stream.wait();
    } else if (slot.reordered) {
      dnnl::memory user(slot.user, eng, w.untyped_data());
      slot.reorder.execute(stream, {{DNNL_ARG_FROM, user}, {DNNL_ARG_TO, wanted}});
      stream.wait();
    } else {
      std::memcpy(packed->untyped_data(), w.untyped_data(), slot.wanted.get_size());
    }
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("cyclejax onednn pack: ") + e.what());
  }
  return ffi::Error::Success();
}

}  // namespace

#define CYCLEJAX_CONV_BINDING \
  ffi::Ffi::Bind()            \
      .Arg<ffi::AnyBuffer>()  \
      .Arg<ffi::AnyBuffer>()  \
      .Ret<ffi::AnyBuffer>()  \
      .Attr<int64_t>("stride") \
      .Attr<int64_t>("pad_top") \
      .Attr<int64_t>("pad_left") \
      .Attr<ffi::Span<const int64_t>>("kernel") \
      .Attr<int64_t>("packed")

extern "C" {
XLA_FFI_DEFINE_HANDLER_SYMBOL(CyclejaxConvForward, Forward, CYCLEJAX_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(CyclejaxConvBackwardData, BackwardData, CYCLEJAX_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(CyclejaxConvBackwardWeights, BackwardWeights, CYCLEJAX_CONV_BINDING);
XLA_FFI_DEFINE_HANDLER_SYMBOL(CyclejaxConvPack, Pack,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("kind")
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("pad_top")
                                  .Attr<int64_t>("pad_left")
                                  .Attr<ffi::Span<const int64_t>>("x_shape")
                                  .Attr<ffi::Span<const int64_t>>("y_shape"));

// The most convolution calls that were inside the handlers at once since the last reset.
int64_t CyclejaxConvPeakConcurrency(int64_t reset) {
  const int64_t peak = peak_in_flight.load();
  if (reset) peak_in_flight.store(0);
  return peak;
}

// The size (MFLOP) from which a convolution takes the lock; negative: none does.
double CyclejaxConvSerialMflop() { return SerialMflop(); }

// Bytes of the packed kernel for that convolution (ctypes, at trace time); -1 if oneDNN
// cannot build the primitive. `bf16`: 0 float32, 1 bfloat16.
int64_t CyclejaxConvPackedBytes(int64_t kind, int64_t bf16, const int64_t* x_nhwc, const int64_t* hwio,
                                const int64_t* y_nhwc, int64_t stride, int64_t pad_top, int64_t pad_left) {
  try {
    return static_cast<int64_t>(KernelSlot(kind, bf16 ? ffi::DataType::BF16 : ffi::DataType::F32, x_nhwc, hwio,
                                           y_nhwc, stride, pad_top, pad_left).wanted.get_size());
  } catch (const dnnl::error&) {
    return -1;
  }
}
}
