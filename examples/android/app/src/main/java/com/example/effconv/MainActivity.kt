package com.example.effconv

import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.os.Bundle
import android.widget.Button
import android.widget.TextView
import androidx.appcompat.app.AppCompatActivity
import androidx.lifecycle.lifecycleScope
import com.google.ai.edge.litert.Accelerator
import com.google.ai.edge.litert.CompiledModel
import com.google.ai.edge.litert.Environment
import java.io.IOException
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext
import org.json.JSONObject

/**
 * Loads assets/model.tflite (exported by `keras-effconv export`) with the LiteRT
 * GPU accelerator, falls back to the CPU when the GPU cannot compile it, and
 * classifies the real test images in assets/samples/: each is preprocessed with
 * assets/model.json only (size, channel order, scale, mean, std) and shown with
 * its top-1 label (assets/labels.txt), its true label and the latency.
 */
class MainActivity : AppCompatActivity() {

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContentView(R.layout.activity_main)
        val result = findViewById<TextView>(R.id.result)
        findViewById<Button>(R.id.run).setOnClickListener { button ->
            button.isEnabled = false
            result.text = "Running..."
            lifecycleScope.launch {
                result.text = withContext(Dispatchers.Default) {
                    try {
                        classifySamples()
                    } catch (e: Exception) {
                        "Failed: ${e.message}"
                    }
                }
                button.isEnabled = true
            }
        }
    }

    private fun classifySamples(): String {
        // model.json and labels.txt are written next to model.tflite by `keras-effconv export`
        // (schema keras_effconv/model-metadata, version 1; see keras_effconv/export/metadata.py).
        val meta = JSONObject(assets.open("model.json").bufferedReader().use { it.readText() })
        val spec = InputSpec(meta)
        val labels = readLabels()
        val samples = (assets.list(SAMPLES) ?: emptyArray()).filter { it.endsWith(".png") }.sorted()
        require(samples.isNotEmpty()) { "no PNG images in assets/$SAMPLES (run examples/android/make_assets.py)" }

        val env = Environment.create()
        var backend = "GPU"
        // GPU only: compilation fails if any op cannot run on the GPU, so a
        // model that would silently run partly on the CPU is reported as such.
        val model = try {
            CompiledModel.create(assets, MODEL, CompiledModel.Options(Accelerator.GPU), env)
        } catch (e: Exception) {
            backend = "CPU (GPU unavailable: ${e.message})"
            CompiledModel.create(assets, MODEL, CompiledModel.Options(Accelerator.CPU), env)
        }
        try {
            val inputs = model.createInputBuffers()
            val outputs = model.createOutputBuffers()
            val lines = mutableListOf<String>()
            val allMillis = mutableListOf<Double>()
            var correct = 0
            for ((index, name) in samples.withIndex()) {
                inputs[0].writeFloat(spec.toInput(decode("$SAMPLES/$name")))
                if (index == 0) repeat(WARMUP) { model.run(inputs, outputs) }
                val millis = DoubleArray(RUNS_PER_IMAGE) {
                    val start = System.nanoTime()
                    model.run(inputs, outputs)
                    (System.nanoTime() - start) / 1e6
                }.sorted()
                allMillis.addAll(millis)
                // Batch slot 0 holds the image; its scores are the first classes of the output.
                val scores = outputs[0].readFloat()
                val classes = if (labels.isNotEmpty()) labels.size else scores.size / spec.batch
                val top1 = (0 until classes).maxByOrNull { scores[it] } ?: -1
                val truth = TRUE_LABEL.find(name)?.groupValues?.get(1)?.toIntOrNull()
                if (truth == top1) correct++
                val truthText = if (truth == null) "" else "  true ${labelOf(labels, truth)}"
                lines += "%s: %s%s  %.2f ms".format(name.removeSuffix(".png"), labelOf(labels, top1), truthText,
                    millis[RUNS_PER_IMAGE / 2])
            }
            inputs.forEach { it.close() }
            outputs.forEach { it.close() }
            val sorted = allMillis.sorted()
            return buildString {
                appendLine("model: $MODEL ${meta.optJSONObject("provenance")?.optString("model") ?: ""}")
                appendLine("input: ${spec.describe()}")
                appendLine("backend: $backend")
                appendLine("median latency: %.2f ms (min %.2f ms, %d runs)".format(
                    sorted[sorted.size / 2], sorted[0], sorted.size))
                appendLine("top-1 = true label: $correct of ${samples.size}")
                lines.forEach { appendLine(it) }
            }
        } finally {
            model.close()
            env.close()
        }
    }

    private fun decode(path: String): Bitmap {
        val options = BitmapFactory.Options().apply {
            inPreferredConfig = Bitmap.Config.ARGB_8888
            inScaled = false
        }
        return assets.open(path).use { BitmapFactory.decodeStream(it, null, options) }
            ?: throw IOException("cannot decode assets/$path")
    }

    private fun readLabels(): List<String> = try {
        assets.open("labels.txt").bufferedReader().use { it.readLines() }.dropLastWhile { it.isBlank() }
    } catch (e: IOException) {
        emptyList() // exported without class names: classes are shown by index
    }

    private fun labelOf(labels: List<String>, index: Int): String =
        if (index in labels.indices) labels[index] else "class $index"

    companion object {
        private const val MODEL = "model.tflite"
        private const val SAMPLES = "samples"
        private const val WARMUP = 5
        private const val RUNS_PER_IMAGE = 5
        private val TRUE_LABEL = Regex("true_(\\d+)")
    }
}

/**
 * The input as model.json describes it: `input.shape` [H, W, C] (NHWC), `input.batch_size`,
 * and `preprocessing`: input[c] = (pixel[c] * scale - mean[c]) / std[c], with the pixel's
 * channels taken in `channel_order` ("RGB", "BGR" or "gray") after a bilinear resize to H x W.
 */
private class InputSpec(meta: JSONObject) {
    val height: Int
    val width: Int
    val channels: Int
    val batch: Int
    private val channelOrder: String
    private val scale: Float
    private val mean: FloatArray
    private val std: FloatArray
    private val known: Boolean

    init {
        val input = meta.getJSONObject("input")
        val layout = input.getString("layout")
        require(layout == "NHWC") { "this app feeds NHWC inputs; model.json says $layout" }
        val shape = input.getJSONArray("shape")
        height = shape.getInt(0)
        width = shape.getInt(1)
        channels = shape.getInt(2)
        batch = if (input.isNull("batch_size")) 1 else input.getInt("batch_size")
        // null when the model was exported without metadata: assume the training recipe's pixels / 255.
        val pre = meta.optJSONObject("preprocessing")
        known = pre != null
        channelOrder = pre?.getString("channel_order") ?: if (channels == 1) "gray" else "RGB"
        scale = pre?.getDouble("scale")?.toFloat() ?: (1f / 255f)
        mean = pre?.getJSONArray("mean")?.let { a -> FloatArray(a.length()) { a.getDouble(it).toFloat() } }
            ?: FloatArray(channels)
        std = pre?.getJSONArray("std")?.let { a -> FloatArray(a.length()) { a.getDouble(it).toFloat() } }
            ?: FloatArray(channels) { 1f }
        val expected = if (channelOrder == "gray") 1 else 3
        require(channels == expected && mean.size == channels && std.size == channels) {
            "model.json: channel_order $channelOrder, ${mean.size} means, ${std.size} stds for $channels channels"
        }
    }

    fun describe(): String =
        "${batch}x${height}x${width}x$channels NHWC, $channelOrder, (pixel * $scale - mean) / std" +
            if (known) "" else " (no preprocessing in model.json: assumed)"

    /** One image in batch slot 0 (other slots zero), as the model expects it. */
    fun toInput(image: Bitmap): FloatArray {
        val sameSize = image.width == width && image.height == height
        val scaled = if (sameSize) image else Bitmap.createScaledBitmap(image, width, height, true) // bilinear
        val pixels = IntArray(width * height)
        scaled.getPixels(pixels, 0, width, 0, 0, width, height)
        val out = FloatArray(batch * height * width * channels)
        for (i in pixels.indices) {
            val p = pixels[i]
            val r = ((p shr 16) and 0xFF).toFloat()
            val g = ((p shr 8) and 0xFF).toFloat()
            val b = (p and 0xFF).toFloat()
            for (c in 0 until channels) {
                val value = when (channelOrder) {
                    "gray" -> 0.299f * r + 0.587f * g + 0.114f * b // a gray PNG decodes to r == g == b
                    "BGR" -> if (c == 0) b else if (c == 1) g else r
                    else -> if (c == 0) r else if (c == 1) g else b
                }
                out[i * channels + c] = (value * scale - mean[c]) / std[c]
            }
        }
        return out
    }
}
