// lmforge::int8_native, int4_native and bf16_native for CPU tensors, registered in C++: a decode step, eager,
// compiled or exported ahead of time, then calls native.c's kernels through torch's dispatcher without
// entering Python (a Python kernel cost about 20 us a call there, and a SmolLM2 step makes 121 calls).
// The kernels are the ones native.py built: this library links that one, it does not copy it.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>

extern "C" {
int lmf_int8_mm(const void *x, int bf16, long M, long K, const int8_t *w, const float *scale,
                const float *bias, long N, void *out, int threads);
int lmf_int4_mm(const void *x, int bf16, long M, long K, const uint8_t *q, const float *so, long group,
                const float *bias, long N, void *out, int threads);
int lmf_bf16_mm(const void *x, int bf16, long M, long K, const uint16_t *w, const float *bias, long N, void *out,
                int threads);
}

namespace {

// The kernels read raw memory: refuse what they would misread, as native.py's _check does (`scales`
// absent for bf16 weights).
void check(const at::Tensor &x, const at::Tensor &codes, at::ScalarType codes_dtype, const at::Tensor *scales,
           int64_t scales_numel, const std::optional<at::Tensor> &bias, int64_t k) {
    bool ok = (x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16) && x.dim() == 2 &&
              x.size(1) == k && k % 32 == 0 && codes.scalar_type() == codes_dtype && codes.dim() == 2 && x.is_cpu() &&
              codes.is_cpu() && x.is_contiguous() && codes.is_contiguous();
    if (scales)
        ok = ok && scales->scalar_type() == at::kFloat && scales->numel() == scales_numel && scales->is_cpu() &&
             scales->is_contiguous();
    if (bias.has_value())
        ok = ok && bias->scalar_type() == at::kFloat && bias->is_cpu() && bias->is_contiguous() &&
             bias->numel() == codes.size(0);
    TORCH_CHECK_VALUE(ok, "lmforge's native kernels take contiguous CPU tensors: x float32/bfloat16 (M, K), K a multiple of 32, codes ",
                      codes_dtype, ", scales and bias float32 of matching sizes");
}

const float *bias_data(const std::optional<at::Tensor> &bias) {
    return bias.has_value() ? bias->data_ptr<float>() : nullptr;
}

void finish(int status, int64_t m, int64_t k) {
    TORCH_CHECK_WITH(OutOfMemoryError, status == 0, "lmforge's native kernel could not allocate the activations of ",
                     m, " rows x ", k, " inputs");
}

at::Tensor int8_native(const at::Tensor &x, const at::Tensor &codes, const at::Tensor &scale,
                       const std::optional<at::Tensor> &bias) {
    int64_t m = x.size(0), n = codes.size(0), k = codes.size(1);
    check(x, codes, at::kChar, &scale, n, bias, k);
    at::Tensor out = at::empty({m, n}, x.options());
    finish(lmf_int8_mm(x.data_ptr(), x.scalar_type() == at::kBFloat16, m, k, codes.data_ptr<int8_t>(),
                       scale.data_ptr<float>(), bias_data(bias), n, out.data_ptr(), at::get_num_threads()),
           m, k);
    return out;
}

at::Tensor int4_native(const at::Tensor &x, const at::Tensor &packed, int64_t group_size,
                       const at::Tensor &scale_offset, const std::optional<at::Tensor> &bias) {
    int64_t m = x.size(0), n = packed.size(0), k = 2 * packed.size(1);
    TORCH_CHECK_VALUE(group_size > 0 && group_size % 32 == 0 && k % group_size == 0,
                      "lmforge's int4 kernel takes groups of a multiple of 32 inputs that divide K");
    check(x, packed, at::kByte, &scale_offset, n * (k / group_size) * 2, bias, k);
    at::Tensor out = at::empty({m, n}, x.options());
    finish(lmf_int4_mm(x.data_ptr(), x.scalar_type() == at::kBFloat16, m, k, packed.data_ptr<uint8_t>(),
                       scale_offset.data_ptr<float>(), group_size, bias_data(bias), n, out.data_ptr(),
                       at::get_num_threads()),
           m, k);
    return out;
}

at::Tensor bf16_native(const at::Tensor &x, const at::Tensor &weight, const std::optional<at::Tensor> &bias) {
    int64_t m = x.size(0), n = weight.size(0), k = weight.size(1);
    check(x, weight, at::kBFloat16, nullptr, 0, bias, k);
    at::Tensor out = at::empty({m, n}, x.options());
    finish(lmf_bf16_mm(x.data_ptr(), x.scalar_type() == at::kBFloat16, m, k,
                       reinterpret_cast<const uint16_t *>(weight.data_ptr()), bias_data(bias), n, out.data_ptr(),
                       at::get_num_threads()),
           m, k);
    return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(lmforge, CPU, m) {
    m.impl("int8_native", &int8_native);
    m.impl("int4_native", &int4_native);
    m.impl("bf16_native", &bf16_native);
}
