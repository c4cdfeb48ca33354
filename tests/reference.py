"""Independent NumPy references (no Keras) used to check the layers."""

import numpy as np


def same_padding(length, kernel, stride, dilation):
    effective = (kernel - 1) * dilation + 1
    out = -(-length // stride)
    total = max((out - 1) * stride + effective - length, 0)
    return total // 2, total - total // 2


def conv2d(x, kernel, strides=(1, 1), padding="same", dilation=(1, 1)):
    """Cross-correlation NHWC x HWIO with TensorFlow's padding convention."""
    x = np.asarray(x, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    kh, kw = kernel.shape[:2]
    sh, sw = strides
    dh, dw = dilation
    if padding == "same":
        ph = same_padding(x.shape[1], kh, sh, dh)
        pw = same_padding(x.shape[2], kw, sw, dw)
        x = np.pad(x, [(0, 0), ph, pw, (0, 0)])
    out_h = (x.shape[1] - (kh - 1) * dh - 1) // sh + 1
    out_w = (x.shape[2] - (kw - 1) * dw - 1) // sw + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[3]))
    for a in range(kh):
        for b in range(kw):
            patch = x[:, a * dh : a * dh + (out_h - 1) * sh + 1 : sh,
                      b * dw : b * dw + (out_w - 1) * sw + 1 : sw, :]
            out += patch @ kernel[a, b]
    return out


def depthwise2d(x, kernel, strides=(1, 1), padding="same", dilation=(1, 1)):
    """Depthwise conv with kernel (kh, kw, C, 1) as a dense conv with a diagonal kernel."""
    kh, kw, c, m = kernel.shape
    dense = np.zeros((kh, kw, c, c * m))
    for ch in range(c):
        for q in range(m):
            dense[:, :, ch, ch * m + q] = kernel[:, :, ch, q]
    return conv2d(x, dense, strides, padding, dilation)


def to_numpy(t):
    import keras

    return np.asarray(keras.ops.convert_to_numpy(t), dtype=np.float64)


def conv2d_kernel_gradient(x, cotangent, kernel_shape, strides=(1, 1), padding="same", dilation=(1, 1)):
    """d sum(conv2d(x, K) * cotangent) / dK for an HWIO kernel of `kernel_shape` (TensorFlow padding)."""
    x = np.asarray(x, dtype=np.float64)
    cotangent = np.asarray(cotangent, dtype=np.float64)
    kh, kw = kernel_shape[:2]
    sh, sw = strides
    dh, dw = dilation
    if padding == "same":
        x = np.pad(x, [(0, 0), same_padding(x.shape[1], kh, sh, dh), same_padding(x.shape[2], kw, sw, dw), (0, 0)])
    out_h, out_w = cotangent.shape[1:3]
    grad = np.zeros(kernel_shape)
    for a in range(kh):
        for b in range(kw):
            patch = x[:, a * dh : a * dh + (out_h - 1) * sh + 1 : sh,
                      b * dw : b * dw + (out_w - 1) * sw + 1 : sw, :]
            grad[a, b] = np.einsum("bhwi,bhwo->io", patch, cotangent)
    return grad
