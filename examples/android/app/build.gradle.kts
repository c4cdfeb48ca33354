plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

android {
    namespace = "com.example.effconv"
    compileSdk = 35

    defaultConfig {
        applicationId = "com.example.effconv"
        minSdk = 26
        targetSdk = 35
        versionCode = 1
        versionName = "1.0"
    }

    // The .tflite model ships uncompressed so LiteRT can memory-map it.
    androidResources {
        noCompress += "tflite"
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions {
        jvmTarget = "17"
    }
}

dependencies {
    // LiteRT CompiledModel API; the GPU accelerator ships in litert-gpu.
    // Same release line as the ai-edge-litert 2.3.0 used to verify the export.
    implementation("com.google.ai.edge.litert:litert:2.3.0")
    implementation("com.google.ai.edge.litert:litert-gpu:2.3.0")
    implementation("androidx.appcompat:appcompat:1.7.0")
    // lifecycleScope, used to run the benchmark off the main thread.
    implementation("androidx.lifecycle:lifecycle-runtime-ktx:2.8.7")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.9.0")
}
