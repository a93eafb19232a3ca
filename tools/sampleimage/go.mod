module errand/tools/sampleimage

go 1.26
